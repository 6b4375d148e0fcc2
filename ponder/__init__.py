"""ponder: recurrent-depth reasoning models (TRM, HRM, URM, retrofitted LMs) in plain PyTorch."""

__version__ = "0.1.0"


class UserError(Exception):
    """Bad input from the user (a file, a path, a config key, a checkpoint).

    The CLI prints the message as one line on stderr and exits with status 2; it is never a traceback.
    """


IGNORE = -100  # the label of a position without loss, on both sides (puzzle batches, LM sequences): F.cross_entropy's
#                default ignore_index


def __getattr__(name: str):
    """`ponder.load`, `ponder.train`, `ponder.Model`: the Python API (`ponder.api`), imported on first use so that
    `import ponder` stays light."""
    if name in ("load", "train", "Model", "Answer"):
        from ponder import api

        return getattr(api, name)
    raise AttributeError(f"module 'ponder' has no attribute {name!r}")

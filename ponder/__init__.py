"""ponder: recurrent-depth reasoning models (TRM, HRM, URM, retrofitted LMs) in plain PyTorch."""

__version__ = "0.1.0"


class UserError(Exception):
    """Bad input from the user (a file, a path, a config key, a checkpoint).

    The CLI prints the message as one line on stderr and exits with status 2; it is never a traceback.
    """

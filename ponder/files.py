"""Atomic file writes, shared by dataset builders, runs and evaluations: a file is written under a temporary name in
its folder, flushed to disk and renamed into place, so a crash or Ctrl-C never leaves a half-written file under a
real name, and the previous good version stays until the new one is complete. Files and folders get the user's usual
permissions (0666 / 0777 less the umask), not the owner-only ones of temporary files, so colleagues on a shared
server can read runs and datasets."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ponder import UserError


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it: set and restore at once
    os.umask(mask)
    return mask


def usual_permissions(path: str | Path, folder: bool = False) -> None:
    """Give a file (0666) or folder (0777) made by `tempfile` (owner-only) the permissions `open`/`mkdir` give."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """`open(path, mode)` for writing ("w" or "wb"), renamed into place when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        usual_permissions(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself on disk too
    except BaseException:
        os.unlink(tmp)
        raise


def parse_json(text: str | bytes, where: str) -> object:
    """The one JSON boundary: `text` parsed, or UserError("<where>: ...") for anything malformed — not UTF-8, not
    JSON, nested too deep (RecursionError), an integer of more digits than Python converts (ValueError)."""
    try:
        return json.loads(text.decode("utf-8-sig") if isinstance(text, bytes) else text)  # a BOM is accepted
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise UserError(f"{where}: not valid JSON ({str(e).splitlines()[0][:120]})") from None


def read_json(path: str | Path) -> object:
    """A JSON file through `parse_json`; a missing or unreadable file is a UserError too."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except OSError as e:
        raise UserError(f"{path}: unreadable ({e.strerror})") from None
    return parse_json(data, str(path))


def fsync_tree(folder: str | Path) -> None:
    """Flush every file of a folder, then the folder itself, to disk (before it is renamed into place)."""
    folder = Path(folder)
    for f in folder.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)

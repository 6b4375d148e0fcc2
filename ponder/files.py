"""Atomic file writes, shared by dataset builders, runs and evaluations: a file is written under a temporary name in
its folder, flushed to disk and renamed into place, so a crash or Ctrl-C never leaves a half-written file under a
real name, and the previous good version stays until the new one is complete. Files and folders get the user's usual
permissions (0666 / 0777 less the umask), not the owner-only ones of temporary files, so colleagues on a shared
server can read runs and datasets."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import uuid
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
    refuse_link(path)  # the rename would replace the link, but a link where ponder writes is a mistake to name
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
    except BaseException as e:
        full = out_of_space(e, path.parent)
        os.unlink(tmp)
        if full is not None:
            raise full from None
        raise


def out_of_space(error: BaseException, folder: str | Path) -> OSError | None:
    """The OSError(ENOSPC) naming `folder` that a failed write means when the disk is full, whatever raised it:
    an OSError with that errno, safetensors' SafetensorError ("No space left on device (os error 28)"), and the
    ones that do not say it - torch.save's RuntimeError ("unexpected pos"), numpy's OSError ("N requested and M
    written") - recognised by the free space left (under 1 MiB). None for any other error."""
    if not isinstance(error, Exception):
        return None
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(error.errno, os.strerror(error.errno), str(error.filename or folder))
    text = str(error)
    full = "No space left" in text or "os error 28" in text or "StorageFull" in text
    if not full and isinstance(error, (OSError, RuntimeError)):
        try:
            full = shutil.disk_usage(folder).free < 1 << 20
        except OSError:
            pass
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder)) if full else None


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


# ---------------------------------------------------------------------------------------------------------------------
# where ponder writes: never through a symbolic link, never over what it did not make

MARKER = ".ponder"  # in every folder ponder makes for an --out: {"kind", "id", "made": [entries it wrote]}
LOCK = ".lock"  # the flock of the process that owns a folder (a run, a dataset being built)


PLAIN_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]{0,99}")


def plain_name(name: str) -> bool:
    """A name that is one folder entry and nothing else: no path separator, no "..", no URL scheme, not hidden."""
    return bool(PLAIN_NAME.fullmatch(name))


def refuse_link(path: str | Path) -> None:
    """UserError when `path` is a symbolic link: ponder creates, truncates and appends only to real files and
    folders, so a planted link never turns a write into one somewhere else."""
    if os.path.islink(path):
        raise UserError(f"{path}: is a symbolic link; ponder does not write through links (remove the link, or give "
                        f"the real path)")


def open_no_follow(path: str | Path, mode: str = "a") -> IO:
    """`open(path, mode)` for "a" (append), "a+" (append, also readable) or "w" (a file written as it grows, which
    others read meanwhile) that never follows a symbolic link (O_NOFOLLOW: a planted link is refused with one line,
    its target untouched) and creates the file with the usual permissions."""
    flags = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_TRUNC if mode == "w" else os.O_APPEND)
    flags |= os.O_RDWR if "+" in mode else os.O_WRONLY
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if os.path.islink(path):
            refuse_link(path)
        raise UserError(f"{path}: cannot open for writing ({e.strerror})") from None
    return os.fdopen(fd, mode)


def read_marker(folder: Path) -> dict | None:
    """The folder's .ponder marker (None when it has none); a damaged one is a UserError."""
    path = Path(folder) / MARKER
    if not path.exists() and not path.is_symlink():
        return None
    refuse_link(path)
    body = read_json(path)
    if not (isinstance(body, dict) and isinstance(body.get("kind"), str) and isinstance(body.get("id"), str)
            and isinstance(body.get("made", []), list)):
        raise UserError(f"{path}: not a ponder folder marker (expected kind, id and made)")
    return body


def write_marker(folder: Path, body: dict) -> None:
    atomic_write_text(Path(folder) / MARKER, json.dumps(body, indent=2))


def new_marker(folder: Path, kind: str, made: list[str] | None = None) -> dict:
    """A folder's first marker: its kind, a random id written once, the entries counted as ponder's."""
    marker = {"kind": kind, "id": uuid.uuid4().hex, "made": list(made or [])}
    write_marker(folder, marker)
    return marker


class Output:
    """A folder ponder writes into (an --out): a real folder (not a link) that ponder made, or an empty one, or one
    of an earlier ponder version (`legacy`: the files that kind always wrote are there). Any other folder with
    something in it is refused unless `force`, and then ponder writes beside what is there: `entry` refuses a name
    that exists and that ponder did not write, so --force never replaces a user's file."""

    def __init__(self, path: str | Path, kind: str, force: bool = False, legacy: tuple[str, ...] = ()):
        self.path = Path(path)
        refuse_link(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        marker = read_marker(self.path)
        present = sorted(p.name for p in self.path.iterdir() if p.name not in (MARKER, LOCK)
                         and not p.name.startswith(f".{MARKER}."))
        if marker is not None:
            if marker["kind"] != kind:
                raise UserError(f"{self.path}: holds a ponder {marker['kind']}, not a {kind}; give another --out")
        elif not present or (legacy and all((self.path / name).exists() for name in legacy)):
            marker = new_marker(self.path, kind, present)  # empty, or an older ponder's
        elif force:
            marker = new_marker(self.path, kind)
        else:
            raise UserError(f"{self.path}: a folder ponder did not make, and not empty ({len(present)} entries, e.g. "
                            f"{present[0]}); give a new or empty folder, or --force to write beside them (nothing of "
                            f"yours is replaced)")
        self.marker = marker

    def entry(self, name: str) -> Path:
        return entry(self.path, name)


def entry(folder: str | Path, name: str) -> Path:
    """The path of `name` in `folder`, about to be written by ponder: refused when the folder or the name is a link;
    in a folder with a marker (`Output`), refused when something of that name exists that ponder did not write, and
    else recorded as ponder's before it is written."""
    folder = Path(folder)
    refuse_link(folder)
    path = folder / name
    refuse_link(path)
    marker = read_marker(folder) if folder.is_dir() else None
    if marker is not None and name not in marker["made"]:
        if path.exists():
            raise UserError(f"{path}: not written by ponder; move it away, or give another --out (ponder replaces "
                            f"only its own files)")
        marker["made"].append(name)
        write_marker(folder, marker)
    return path


def take_lock(folder: str | Path, what: str) -> IO | None:
    """An exclusive `flock` on FOLDER/.lock (the folder made if missing; the lock file never a link), held until the
    returned file is closed, or UserError naming the process that holds it ("in use by ..."). The OS drops the lock
    when its process dies. None where `fcntl` is missing (Windows: not locked)."""
    try:
        import fcntl
    except ImportError:
        return None
    folder = Path(folder)
    refuse_link(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create the folder ({e.strerror})") from None
    f = open_no_follow(folder / LOCK, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise UserError(f"{folder}: in use by {owner}; one process writes a {what} at a time (wait for it or stop it: "
                        f"a stopped or killed process frees it at once)") from None
    return f


@contextmanager
def locked(folder: str | Path, what: str = "folder") -> Iterator[IO | None]:
    """`take_lock` for the block."""
    f = take_lock(folder, what)
    try:
        yield f
    finally:
        if f is not None:
            f.close()

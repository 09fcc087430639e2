"""Atomic file writes: a crash or Ctrl-C never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """An empty temp file in `path`'s folder (so renaming it onto `path` is atomic), with the umask's mode.

    mkstemp creates 0600; outputs should be readable like any other file the user writes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temp file lives in the same directory so the final rename is atomic on POSIX.
    """
    path = Path(path)
    tmp_path = temp_beside(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class LockHeld(Exception):
    """`exclusive_lock(wait=False)` found the lock taken; `holder` is what its owner wrote into it."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path}: held by {holder or 'another process'}")
        self.path = path
        self.holder = holder


def _lock_description() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"


@contextlib.contextmanager
def exclusive_lock(path: str | Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock across processes on `path`; the file is removed again on release.

    The lock file says who holds it (pid, host, start time), so a refused second run can name its owner.
    It is deleted on release so that locks do not pile up as empty files; a process that opened the file
    just before it was deleted notices (the inode changed) and locks the new file instead. With
    `wait=False` a lock held elsewhere raises `LockHeld` at once. The lock dies with its process (flock),
    so a killed run never leaves a stale lock behind. Where the OS has no flock (Windows) there is no lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock; every output is still written atomically
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            raise LockHeld(path, holder) from None
        except OSError as e:  # a file system without locks (some network mounts): go on unlocked
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            yield
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file while we waited: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, _lock_description().encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


_IO_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere, then run the same command again",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere, then run the same command again",
    errno.EROFS: "read-only file system; choose a folder on a writable disk",
    errno.EACCES: "permission denied; choose a folder you can write to, or change its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write to, or change its permissions",
}
"""The environment errors a user fixes (disk full, read-only mount, permissions), whatever library met them."""


def io_error_message(error: BaseException, name_file: bool = True) -> str | None:
    """One line for a disk-full, read-only or permission error anywhere in `error`'s chain, else None.

    torch, h5py and OpenCV wrap the OSError (torch.save on a full disk raises "RuntimeError: ... unexpected
    pos"), so the chain is searched, and a torch writer error is recognised by its text.
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _IO_ADVICE:
            where = (e.filename or e.filename2) if name_file else None
            return f"{where}: {_IO_ADVICE[e.errno]}" if where else _IO_ADVICE[e.errno]
        if isinstance(e, RuntimeError) and "unexpected pos" in str(e):
            return f"{_IO_ADVICE[errno.ENOSPC]} (a file write stopped short)"
        e = e.__cause__ or e.__context__
    return None


def check_writable(path: str | Path) -> None:
    """Raise the user's OSError (EROFS, EACCES...) now if files cannot be created in folder `path`.

    Long jobs call this before their work: an export on a read-only disk failed after its 5 s of work.
    The folder itself is not created (a run that fails before its first checkpoint leaves none behind):
    the nearest existing folder above it is tried with a temp file that is removed at once.
    """
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return  # a file where a folder should be: the caller's own check names it
    try:
        fd, tmp = tempfile.mkstemp(prefix=".siamtool-write-test.", dir=folder)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(folder)) from None
    os.close(fd)
    os.unlink(tmp)

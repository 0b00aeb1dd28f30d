"""Atomic file replacement: a reader sees the old content or the new, never half of it."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from latentcause.errors import InputError

__all__ = ["atomic_write_bytes", "default_mode"]


def default_mode(*, folder: bool = False) -> int:
    """Return the mode a new file (or folder) gets under the current umask.

    mkstemp and mkdtemp create private 0600/0700 entries; what they become in the end
    should be what ``open`` or ``mkdir`` would have made.
    """
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and os.replace.

    The mode is ``mode`` if given, else that of the file being replaced, else the umask's
    default, so replacing a file does not silently change who may read it.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if mode is None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = default_mode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"{path}: cannot write in {folder}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path

"""The one atomic-file writer of the embedded adapters (segments, job result pages).

Data is written to a dot-prefixed temp file in the target's directory (listings ignore dot
files), fsynced, then published under its final name: with ``os.replace`` (atomic on POSIX: a
reader sees the old bytes or the new), or, when the final name must never be overwritten, with
``os.link``, which is atomic too and refuses an existing name (``FileExistsError``). The directory
is fsynced after, so the new entry itself survives a power cut. A crash leaves at most a ``.tmp``
file behind, never a torn final file.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (the file's own fsync does not)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(final: Path, data: bytes, *, fsync: bool = True, overwrite: bool = True) -> None:
    """Write ``data`` at ``final`` all at once. With ``overwrite=False`` an existing file is kept
    and ``FileExistsError`` raised."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, final)
        else:
            _publish_new(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        fsync_dir(final.parent)


def _publish_new(tmp: Path, final: Path) -> None:
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        # No hard links on this filesystem: best effort no-clobber, then atomic rename.
        if final.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(final)) from None
        os.replace(tmp, final)

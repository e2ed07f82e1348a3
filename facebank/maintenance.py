"""Housekeeping of ``facebank serve``'s data directory: private modes, stale temporary files and
background compaction of small segments (the same ``SegmentIndex.compact`` the AWS side runs on a
schedule, ``aws/compaction.py``)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import threading
from pathlib import Path

from facebank.operations import Context

log = logging.getLogger("facebank.maintenance")

# Temporary files of the atomic writers: ".<name>.<pid>.<hex>.tmp" (storage/files.py, job_files.py).
_TMP = re.compile(r"\..+\.(?P<pid>\d+)\.[0-9a-f]+\.tmp")


def make_private(data_dir: Path) -> None:
    """The data directory 0700 and everything in it owner-only (dirs 0700, files 0600): face
    vectors and ExternalImageIds are nobody else's. New files follow from the process umask
    (``facebank serve`` sets 077)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in [data_dir, *data_dir.rglob("*")]:
        with contextlib.suppress(OSError):  # removed meanwhile
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            wanted = 0o700 if stat.S_ISDIR(mode) else stat.S_IMODE(mode) & 0o700
            if stat.S_IMODE(mode) != wanted:
                path.chmod(wanted)


def remove_stale_tmp(data_dir: Path) -> int:
    """Remove temporary files left by a crashed writer (its process no longer runs); returns how many."""
    removed = 0
    for path in data_dir.rglob(".*.tmp"):
        match = _TMP.fullmatch(path.name)
        if match is None or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    if removed:
        log.info("removed %d stale temporary files under %s", removed, data_dir)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Compactor:
    """A background thread merging small segments of every collection, every ``interval_s``
    seconds, once they are ``min_age_s`` old (their metadata has landed)."""

    def __init__(self, ctx: Context, interval_s: float = 30.0, min_age_s: float | None = None):
        self.ctx = ctx
        self.interval_s = interval_s
        self.min_age_s = ctx.settings.compact_min_age_s if min_age_s is None else min_age_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="compactor", daemon=True)

    def start(self) -> Compactor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - one failed pass must not end compaction; logged once
                log.exception("compaction pass failed")

    def run_once(self) -> int:
        """Compact every collection once; returns the number of segments merged away."""
        merged = 0
        token = None
        while not self._stop.is_set():
            records, token = self.ctx.metadata.list_collections(1000, token)
            for collection_id in (record.collection_id for record in records):
                if self._stop.is_set():
                    break
                for index in (self.ctx.index, self.ctx.user_index):
                    try:
                        result = index.compact(collection_id, min_age_s=self.min_age_s)
                    except Exception as exc:  # noqa: BLE001 - e.g. deleted meanwhile: the next pass sees it
                        log.info("compaction of %s skipped: %s", collection_id, exc)
                        continue
                    if result.removed:
                        merged += len(result.removed)
                        log.info(
                            "compacted %s: %d segments into one (%d rows kept, %d dropped)",
                            collection_id,
                            len(result.removed),
                            result.kept,
                            result.dropped,
                        )
            if not token:
                break
        return merged

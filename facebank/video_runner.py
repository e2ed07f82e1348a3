"""Video jobs inside ``facebank serve``: a bounded pool of worker threads.

Start* hands a job over with ``submit`` (``Context.submit_video_job``, set by facebank.wiring) and
answers at once; at most ``workers`` jobs are analysed at a time and the rest wait in the pool's
queue, so API calls stay responsive while videos are analysed (the HTTP server has its own
threads). Job state is in storage, not in the pool: when the server starts, ``resume`` resubmits
every job IN_PROGRESS (interrupted by a stop or a crash), and each continues after its last
analysed segment (video_jobs.run_job), or ends FAILED with a message if it cannot.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from facebank.operations import Context
from facebank.operations.video_jobs import run_job

log = logging.getLogger("facebank.video")


class VideoRunner:
    def __init__(self, ctx: Context, workers: int = 1):
        if workers < 1:
            raise ValueError(f"video workers must be at least 1, not {workers}")
        self.ctx = ctx
        self.workers = workers
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._queued: set[str] = set()  # a job is in the pool once, however often it is submitted
        self._pool: ThreadPoolExecutor | None = None  # started on first use: no threads otherwise

    def submit(self, job_id: str) -> None:
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError("the video runner is stopping")
            if job_id in self._queued:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="video-job")
            self._queued.add(job_id)
            self._pool.submit(self._run, job_id)

    def _run(self, job_id: str) -> None:
        try:
            run_job(job_id, self.ctx, self._stopping.is_set)
        except Exception:  # run_job ends jobs itself; this is storage failing under it
            log.exception("video job %s could not be run; it resumes at the next start", job_id)
        finally:
            with self._lock:
                self._queued.discard(job_id)

    def resume(self) -> int:
        """Resubmit the jobs left IN_PROGRESS by an earlier run; returns how many."""
        jobs = self.ctx.storage.jobs.active_jobs()
        for job in jobs:
            log.info("resuming video job %s (%s)", job.job_id, job.api)
            self.submit(job.job_id)
        return len(jobs)

    def stop(self, wait: bool = True) -> None:
        """Stop taking jobs; running ones stop at their next frame and stay IN_PROGRESS (resumed at
        the next start), queued ones are dropped the same way."""
        with self._lock:
            self._stopping.set()
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

"""The engine's loop: announce, pick up, hold, sweep; one thread per running job.

The main thread owns the timing. It sleeps on a LISTEN connection, so a new job or a stop
wakes it at once, and otherwise wakes for the next of its timers: the heartbeat (announce, as
the original engine does), the lease renewal (one statement for every job it holds), the
fallback poll, and the expiry sweep. Job threads run the stage machine; they never decide
time, and the main thread tells them of stops and of leases lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from common.db import Database, Listener
from common.errors import Unavailable
from engine import metrics
from engine.config import EngineConfig, Environment
from engine.machine import Abandoned, Context, JobRun
from engine.queue import Backlog, Claimed, LeaseLost, Queue
from engine.receipts import OperatorKey
from engine.results import ResultsStore
from engine.runner import Runner
from engine.snapshot import Snapshot
from engine.workflows import WorkflowMirror

log = logging.getLogger(__name__)

CHANNELS = ("jobs_waiting", "jobs_stop")
RETRY_SECONDS = 2.0  # after the database went away


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        db: Database,
        runner: Runner[Any],
        *,
        engine_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        workflows: WorkflowMirror | None = None,
        operator: OperatorKey | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.id = engine_id or f"engine-{uuid.uuid4().hex[:12]}"
        self.queue = Queue(
            db,
            self.id,
            config.lease_seconds,
            half_life_seconds=config.half_life_seconds,
            starvation_seconds=config.starvation_seconds,
        )
        self.context = Context(
            config=config,
            queue=self.queue,
            runner=runner,
            results=ResultsStore(config.results_root),
            workflows=workflows,
            operator=operator,
        )
        self.clock = clock
        self.runs: dict[str, JobRun] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.closing = threading.Event()
        # What /metrics and /healthz read, through snapshot(): the queues as of the last
        # heartbeat, when the loop last turned (Unix time), and whether its database answered.
        self.backlogs: dict[str, Backlog] = {}
        self.last_turn = time.time()
        self.database_ok = False
        self.announced = False  # every environment announced once: starts for them can pass
        self._listener: Listener | None = None
        self._due = {"heartbeat": 0.0, "renew": 0.0, "poll": 0.0, "sweep": 0.0}
        # A finished job or close() wakes the loop through this pipe, without the database.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        # Held while writing to the pipe and while closing it: once closed, its numbers may
        # belong to another file, and a late wake (close() after the loop ended, a job thread
        # that outlived it) must write nowhere.
        self._pipe_lock = threading.Lock()
        self._pipe_open = True

    def run(self) -> None:
        """Serve until `close()`; a database outage pauses the engine, never ends it."""
        config = self.config
        config.work_root.mkdir(parents=True, exist_ok=True)
        config.results_root.mkdir(parents=True, exist_ok=True)
        log.info("engine %s serves %s", self.id, ", ".join(config.namespaces))
        self.last_turn = time.time()
        while not self.closing.is_set():
            try:
                self.step()
                self.database_ok = True
            except Unavailable as exc:
                self.database_ok = False
                log.warning("engine paused: %s", exc.message)
                self._drop_listener()
                self.closing.wait(RETRY_SECONDS)
            self.last_turn = time.time()
        self._let_go()

    def step(self) -> None:
        """One turn of the loop: what is due, then sleep until a notification or a timer."""
        now = self.clock()
        self._reap()
        # Listen before announcing: a job stored just after our first announcement must
        # wake us, not wait for the poll.
        listener = self._listen()
        wake = False
        if now >= self._due["heartbeat"]:
            self._due["heartbeat"] = now + self.config.heartbeat_seconds
            wake = self.heartbeat() or wake
        if now >= self._due["renew"]:
            self._due["renew"] = now + self.config.lease_seconds / 3
            self.renew()
        if now >= self._due["sweep"]:
            self._due["sweep"] = now + self.config.sweep_seconds
            self.sweep()
        if wake or now >= self._due["poll"]:
            self._due["poll"] = now + self.config.poll_seconds
            self.pick_up()
        timeout = max(0.0, min(self._due.values()) - self.clock())
        for channel, payload in listener.wait(timeout, wake=self._wake_read):
            if channel == "jobs_stop" and payload in self.runs:
                self.runs[payload].stop_requested.set()
            elif channel == "jobs_waiting" and payload in self.config.namespaces:
                self._due["poll"] = 0.0

    def heartbeat(self) -> bool:
        """Announce every environment; True when jobs are waiting."""
        claimable = 0
        for env in self.config.environments:
            running = self._running(env)
            last = self.backlogs.get(env.namespace)  # the queue as the last heartbeat found it
            status = env.announcement(
                running,
                queued=last.length if last else 0,
                starvation_seconds=self.config.starvation_seconds,
            )
            backlog = self.queue.heartbeat(env.namespace, status, max(0, env.max_jobs - running))
            self.backlogs[env.namespace] = backlog
            claimable += backlog.claimable
        self.announced = True
        return claimable > 0

    def pick_up(self) -> None:
        """Fill every environment's free slots: lapsed jobs of dead engines first, then new."""
        for env in self.config.environments:
            free = env.max_jobs - self._running(env)
            for job in self.queue.take_over(env.namespace, free):
                self._start(job, env, takeover=True)
            free = env.max_jobs - self._running(env)
            for job in self.queue.claim(env, free):
                self._start(job, env, takeover=False)

    def renew(self) -> None:
        running = {job_id: run for job_id, run in self.runs.items() if not run.done.is_set()}
        held = self.queue.renew(list(running))
        for job_id, run in running.items():
            if job_id not in held:
                log.warning("job %s: lease lost, letting go", job_id)
                run.abandon.set()
            elif held[job_id]:
                run.stop_requested.set()

    def sweep(self) -> None:
        """Delete the results of finished jobs past their environment's storage expiry, and
        their WorkFlows; and the folders of finished jobs left on this machine."""
        self.sweep_folders()
        results = self.context.results
        for env in self.config.environments:
            for job_id in self.queue.expired(env.namespace, env.storage_expiry):
                results.delete(job_id)
                self.queue.mark_expired(job_id)
                if self.context.workflows is not None:  # and whatever it still owns
                    self.context.workflows.delete(job_id, env.namespace)
                log.info("job %s: results expired and deleted", job_id)

    def sweep_folders(self) -> None:
        """A job folder holds a dataset's private inputs: none outlives its job here, whatever
        ended the job (an engine that died, a lease lost, a bug)."""
        root = self.config.work_root
        try:
            names = [
                entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)
            ]
        except OSError:
            return
        held = set(self.runs)
        candidates = [name for name in names if name not in held]
        for name in sorted(set(candidates) - self.queue.unfinished(candidates)):
            if name in self.runs:  # claimed since: it is that run's again
                continue
            self.context.runner.remove_folder(root / name)
            log.info("job folder %s removed: its job is finished or gone", name)

    def close(self) -> None:
        self.closing.set()
        self._wake()

    def _start(self, job: Claimed, env: Environment, *, takeover: bool) -> None:
        run = JobRun(job, env, self.context)
        thread = threading.Thread(target=self._run_job, args=(run,), name=f"job-{job.job_id}")
        self.runs[job.job_id] = run
        self.threads[job.job_id] = thread
        metrics.claimed(env.namespace, takeover)
        log.info("job %s claimed at status %s", job.job_id, job.status)
        thread.start()

    def _run_job(self, run: JobRun) -> None:
        try:
            run.run()
        except (Abandoned, LeaseLost):
            log.info("job %s let go", run.job_id)
        except Unavailable:
            # The database went away mid-job: the lease lapses and a takeover finishes it.
            log.warning("job %s: database unavailable, left for a takeover", run.job_id)
        except Exception:
            # A bug met on this job would be met again by every takeover: end the job instead.
            log.exception("job %s: the engine failed on it; ending it", run.job_id)
            run.end_after_error()
        finally:
            self.db.release()  # this thread's connection: one per job would pile up
            # The slot is free from now, though the thread still exits: look for the next job.
            run.done.set()
            self._due["poll"] = 0.0
            self._wake()

    def _wake(self) -> None:
        with self._pipe_lock:
            if not self._pipe_open:
                return  # the loop has ended: nothing to wake
            try:
                os.write(self._wake_write, b"x")
            except BlockingIOError:
                pass  # the pipe is full: the loop is awake already
            except OSError as exc:
                log.error("the engine's wake pipe: %s; its timers wake it instead", exc.strerror)

    def snapshot(self) -> Snapshot:
        """What the engine holds and knows now; safe from any thread."""
        held: dict[tuple[str, int], int] = {}
        for run in list(self.runs.values()):  # a copy: job threads come and go meanwhile
            if not run.done.is_set():
                key = (run.env.namespace, int(run.status))
                held[key] = held.get(key, 0) + 1
        return Snapshot(
            engine_id=self.id,
            held=held,
            backlogs=dict(self.backlogs),
            last_turn=self.last_turn,
            database_ok=self.database_ok,
            announced=self.announced,
        )

    def _running(self, env: Environment) -> int:
        return self.snapshot().running(env.namespace)

    def _reap(self) -> None:
        for job_id, run in list(self.runs.items()):
            if run.done.is_set():
                self.threads.pop(job_id).join()  # it is past its last step
                del self.runs[job_id]

    def _listen(self) -> Listener:
        if self._listener is None:
            self._listener = self.db.listen(*CHANNELS)
        return self._listener

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _let_go(self) -> None:
        """Stop every stage we run and hand the jobs back: their leases lapse now, so
        another engine (or this one restarted) takes them over without waiting."""
        for run in self.runs.values():
            run.abandon.set()
        for thread in self.threads.values():
            thread.join(timeout=10)
        try:
            self.queue.release(list(self.runs))
        except Unavailable:
            pass
        self._drop_listener()
        with self._pipe_lock:
            self._pipe_open = False
            os.close(self._wake_read)
            os.close(self._wake_write)

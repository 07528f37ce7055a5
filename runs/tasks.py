"""django-q2 tasks for the runs app.

Tasks take primary keys, do one unit of work and are safe to deliver twice: a second delivery of
``drain_run_step`` finds the run's phase already claimed (or done) and returns without doing anything.
"""

from __future__ import annotations

import logging
import os
import socket

from django.conf import settings

logger = logging.getLogger(__name__)


def worker_name(slot: int | str = 0) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{slot}"


def enqueue_run_work(run_id: int) -> None:
    """Ask the worker cluster to execute the run's next phase; callers enqueue after commit."""
    if not settings.AUTOPACK.get("ENQUEUE_TASKS", True):
        return
    from django_q.tasks import async_task

    async_task("runs.tasks.drain_run_step", run_id, task_name=f"run-{run_id}-step", group=f"run-{run_id}")


def drain_run_step(run_id: int) -> bool:
    """Claim and execute one phase of the run; return whether there was work.

    Finishing a phase that leaves more work enqueues the next step (``phase_finish`` does it after
    commit), so one task never outlives django-q2's ``timeout`` by chaining a whole run.
    """
    from runs.drain import execute_one
    from runs.services.leases import phase_claim

    worker = worker_name("q")
    claim = phase_claim(worker=worker, runs=[run_id])
    if claim is None:
        return False
    execute_one(claim, worker=worker, engine=settings.AUTOPACK.get("WORKER_ENGINE", "pipeline"))
    return True


def reap_leases() -> int:
    """Periodic (see ``runs.schedules``): requeue phases whose lease expired."""
    from runs.services.leases import leases_reap

    reaped = leases_reap()
    if reaped:
        logger.info("reaped expired leases", extra={"reaped": reaped})
    return reaped

"""django-q2 tasks for the runs app (the Workers developer replaces this placeholder)."""

from __future__ import annotations


def enqueue_run_work(run_id: int) -> None:
    """Ask the worker cluster to drain the run's phases (placeholder: the drain is not wired yet)."""

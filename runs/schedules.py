"""Periodic django-q2 schedules, declared in code in one idempotent place.

``ensure_schedules()`` runs after every ``migrate`` (``RunsConfig`` connects it to ``post_migrate``):
it creates or updates each schedule by name and never duplicates one.
"""

from __future__ import annotations

from typing import Any

SCHEDULES: dict[str, dict[str, Any]] = {
    # The backstop reaper: claimers also reap in passing, so recovery does not wait for this minute tick.
    "runs.reap_leases": {"func": "runs.tasks.reap_leases", "schedule_type": "I", "minutes": 1, "repeats": -1},
    # Rotated refresh tokens are blacklisted; without a sweep their tables grow forever.
    "accounts.flush_expired_tokens": {
        "func": "django.core.management.call_command",
        "args": "'flushexpiredtokens'",
        "schedule_type": "D",
        "repeats": -1,
    },
}


def ensure_schedules() -> list[str]:
    from django_q.models import Schedule

    names = []
    for name, fields in SCHEDULES.items():
        Schedule.objects.update_or_create(name=name, defaults=fields)
        names.append(name)
    return names

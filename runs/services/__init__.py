"""Service functions: the only code that changes runs-domain state.

Split by workflow: ``transitions`` (the locked state machine), ``control`` (operator actions),
``plan`` (plan import), ``leases`` (claiming, heartbeats, finishing, reaping).
"""

from runs.services.control import (
    phase_requeue,
    phase_skip,
    run_cancel,
    run_complete_if_done,
    run_fail,
    run_pause,
    run_resume,
    run_start,
)
from runs.services.leases import (
    Claim,
    Heartbeat,
    leases_reap,
    phase_claim,
    phase_finish,
    phase_heartbeat,
    phase_release,
    phase_report_event,
)
from runs.services.plan import ImportResult, PlanInvalid, plan_import, plan_validate
from runs.services.transitions import phase_transition, run_transition

__all__ = [
    "Claim",
    "Heartbeat",
    "leases_reap",
    "phase_claim",
    "phase_finish",
    "phase_heartbeat",
    "phase_release",
    "phase_report_event",
    "ImportResult",
    "PlanInvalid",
    "plan_import",
    "plan_validate",
    "phase_requeue",
    "phase_skip",
    "phase_transition",
    "run_cancel",
    "run_complete_if_done",
    "run_fail",
    "run_pause",
    "run_resume",
    "run_start",
    "run_transition",
]

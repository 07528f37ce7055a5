"""No credential is stored in telemetry: free text is passed through ``redact`` before it is written."""

import pytest

from autopack_site.lib.logging import REDACTED
from telemetry import services
from telemetry.models import DoctorOutcomeEvent, FailureHardeningEvent, PhaseOutcomeEvent
from tests.factories import make_run

pytestmark = pytest.mark.django_db

# Built at run time so that no credential-shaped literal sits in the source.
PROVIDER_KEY = "sk-ant-api03-" + "Q7x" * 12
API_KEY = "ak_abcd1234_" + "s3cr3t" * 5


def failure_with(key: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/client.py", line 12, in call\n'
        f"anthropic.AuthenticationError: invalid x-api-key {key}\n"
    )


def test_a_phase_outcome_stores_its_error_text_and_reason_redacted():
    run = make_run()
    services.phase_outcome_record(
        outcome="retry", reason=f"auth failed with {API_KEY}", error_text=failure_with(PROVIDER_KEY), run_id=run.pk
    )

    stored = PhaseOutcomeEvent.objects.get(run_id=run.pk)
    assert PROVIDER_KEY not in stored.error_text and API_KEY not in stored.reason
    assert REDACTED in stored.error_text and REDACTED in stored.reason
    assert "anthropic.AuthenticationError" in stored.error_text  # the rest of the text is kept


def test_the_same_failure_with_another_key_has_the_same_signature():
    first = services.phase_outcome_record(outcome="retry", error_text=failure_with(PROVIDER_KEY))
    second = services.phase_outcome_record(outcome="retry", error_text=failure_with("sk-ant-api03-" + "Z9" * 20))

    assert first.error_signature and first.error_signature == second.error_signature


def test_doctor_rationale_and_hardening_detail_are_stored_redacted():
    run = make_run()
    services.doctor_outcome_record(action="replan", rationale=f"the log shows Bearer {API_KEY}", run_id=run.pk)
    services.hardening_record(
        pattern="missing_dependency", run_id=run.pk, phase_id=None, detail=f"token={PROVIDER_KEY}", error_text="x"
    )

    rationale = DoctorOutcomeEvent.objects.get(run_id=run.pk).rationale
    detail = FailureHardeningEvent.objects.get(run_id=run.pk).detail
    assert API_KEY not in rationale and rationale.startswith("the log shows Bearer ")
    assert detail == f"token={REDACTED}"

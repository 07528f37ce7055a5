"""Workers killed with SIGKILL at random points lose no phase, never overlap and never commit twice.

Leases are shortened to 3 s (heartbeat every 0.5 s) so that 30 kills recover in well under a minute.
"""

from __future__ import annotations

import pytest

from tests.chaos.harness import ChaosConfig, ChaosHarness

pytestmark = [pytest.mark.postgres, pytest.mark.chaos, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_thirty_sigkilled_workers_lose_no_phase_and_commit_each_phase_once(tmp_path):
    harness = ChaosHarness(ChaosConfig(kills=30, timeout_seconds=240), tmp_path)
    report = harness.run()
    print("\n".join(report.lines()))
    assert report.kills >= 30
    assert report.lost_phases == 0
    assert report.unfinished_phases == 0
    assert report.overlapping_leases == 0
    assert report.duplicate_commits == 0
    assert report.missing_commits == 0
    assert report.commit_mismatches == 0
    assert report.reaped_leases > 0

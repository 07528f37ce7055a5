"""Chaos benchmark: SIGKILL drain workers many times; print the invariants and the recovery time.

    .venv/bin/python bench/chaos.py --kills 500 --lease 3
    .venv/bin/python bench/chaos.py --kills 20 --lease 30      # the default lease and heartbeat

Uses its own database (``bench_chaos``), created and dropped here. Recovery time is measured from the kill
(the harness's SIGKILL, or the failpoint's log line) to the next claim of each phase the dead worker held.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _pgdb import bench_database  # noqa: E402  (bench/ is on sys.path when run as a script)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--lease", type=int, default=3, help="lease seconds (the default setting is 30)")
    parser.add_argument("--heartbeat", type=float, default=None, help="heartbeat seconds (default: lease / 6)")
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--phases-per-run", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default="bench_chaos")
    args = parser.parse_args()

    with bench_database(args.database):
        from tests.chaos.harness import ChaosConfig, ChaosHarness

        heartbeat = args.heartbeat or max(0.5, args.lease / 6)
        config = ChaosConfig(
            kills=args.kills,
            workers=args.workers,
            runs=args.runs,
            phases_per_run=args.phases_per_run,
            lease_seconds=args.lease,
            heartbeat_seconds=heartbeat,
            # A dead worker's phase waits a whole lease: kill about as often as leases come back.
            external_kill_every=(args.lease / 10, args.lease / 4),
            timeout_seconds=max(600.0, args.kills * args.lease * 1.5),
            seed=args.seed,
        )
        print(
            f"lease {args.lease}s, heartbeat {heartbeat:.1f}s, {args.workers} worker processes, target {args.kills} kills"
        )
        with tempfile.TemporaryDirectory(prefix="bench-chaos-") as scratch:
            report = ChaosHarness(config, Path(scratch)).run()
        for line in report.lines():
            print(line)
        print("invariants:", "hold" if report.invariants_hold() else "VIOLATED")
        return 0 if report.invariants_hold() else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Fuzz the live API against its own OpenAPI schema (authenticated): no server errors, no response that
# violates the schema. Starts gunicorn on a free 127.0.0.1 port against a fresh, seeded SQLite database
# in a temporary data directory; everything is removed on exit. Bounded to well under two minutes.
# One schemathesis worker: with two, Python 3.11 occasionally fails inside hypothesis (ast.parse is not
# thread-safe there), which is a harness error, not an API failure.
#
#   .ci/schemathesis.sh                # defaults
#   SCHEMATHESIS_EXAMPLES=10 .ci/schemathesis.sh
#   SCHEMATHESIS_INCLUDE='^/api/(auth|projects|runs|phases|attempts)' .ci/schemathesis.sh   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-15}
MAX_TIME=${SCHEMATHESIS_MAX_TIME:-70}
INCLUDE=${SCHEMATHESIS_INCLUDE:-^/api/}

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Production settings (DEBUG off), except plain HTTP on the loopback interface.
export DATABASE_URL="" AUTOPACK_DATA_DIR="$WORK/data" DJANGO_DEBUG=0 ALLOWED_HOSTS=127.0.0.1 SECURE_SSL_REDIRECT=0
export SECRET_KEY="schemathesis-$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')" LOG_LEVEL=WARNING
# The fuzzer is one client sending hundreds of requests: lift the per-user limit, keep the others.
export API_USER_RATE=100000/min
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"$PYTHON" manage.py migrate --noinput -v 0
"$PYTHON" manage.py collectstatic --noinput -v 0
"$PYTHON" manage.py shell -v 0 > "$WORK/token" <<'PY'
import zlib
from pathlib import Path

from accounts.models import Membership, User
from accounts.tokens import tokens_issue
from runs.models import Attempt, AttemptEvent, Project
from runs.services.plan import plan_import

admin = User.objects.create_user("fuzz-admin", password="fuzz-admin-password-1", is_staff=True)
project = Project.objects.create(name="Demo", slug="demo", repository_path="/nonexistent/demo")
Membership.objects.create(user=admin, project=project, role="owner")
plan = Path("tests/fixtures/plans/example_basic.yaml").read_text()
run = plan_import(project=project, document=plan, source_name="example_basic.yaml", created_by=admin).run
for phase in run.phases.all():
    attempt = Attempt.objects.create(
        phase=phase, number=1, claim_epoch=1, worker="seed", diff="--- a/x\n+++ b/x\n",
        summary={"ci": {"fixed": [], "new_failures": []}, "audit": {"approved": True, "issues": []}, "gates": {"ci": True}},
    )
    AttemptEvent.objects.create(attempt=attempt, seq=1, stage="builder", kind="llm_call", data={"tokens": 1})
    AttemptEvent.objects.create(attempt=attempt, seq=2, stage="ci", kind="log", data={}, blob=zlib.compress(b"ok"))
print(tokens_issue(user=admin)["access"])
PY
TOKEN=$(tail -n 1 "$WORK/token")

.venv/bin/gunicorn autopack_site.wsgi:application --bind "127.0.0.1:$PORT" --workers 2 --threads 2 \
    --log-level warning > "$WORK/server.log" 2>&1 &
SERVER_PID=$!

set +e
.venv/bin/schemathesis run "http://127.0.0.1:$PORT/api/schema/" \
    --wait-for-schema 30 \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$EXAMPLES" --max-time "$MAX_TIME" --seed 1 --workers 1 \
    --suppress-health-check all \
    --include-path-regex "$INCLUDE" \
    --request-timeout 10
STATUS=$?
set -e
if grep -q '"level": "ERROR"' "$WORK/server.log"; then
    echo "server errors logged (message and last traceback line, first 20):" >&2
    grep '"level": "ERROR"' "$WORK/server.log" | head -n 20 | "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    last = (record.get("exception") or "").strip().splitlines()[-1:] or [""]
    print(" ", record["message"], "->", last[0])
' >&2
    STATUS=1
fi
exit $STATUS

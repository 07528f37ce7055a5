# Two commands for a newcomer: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test lint format bench bench-short venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo --seed-only
	@echo "Autopack on http://127.0.0.1:$(PORT)/  (admin: /admin/, user demo / password demo-password)"
	$(PY) manage.py serve --port $(PORT)

# The suite on SQLite, then again on PostgreSQL when DATABASE_URL names one.
test: venv
	DATABASE_URL= $(PY) -m pytest $(PYTEST_ARGS)
	@if [ -n "$$DATABASE_URL" ]; then echo "== again on $$DATABASE_URL =="; $(PY) -m pytest $(PYTEST_ARGS); fi

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The full campaigns (several minutes each; PostgreSQL from DATABASE_URL or the local default).
bench: venv
	$(PY) bench/fuzz_apply.py --examples 10000 --diff-examples 2000
	$(PY) bench/apply_bench.py --files 500
	$(PY) bench/pipeline_overhead.py --files 2000
	$(PY) bench/retrieval.py
	$(PY) bench/claims.py
	$(PY) bench/chaos.py --kills 500 --lease 3
	$(PY) bench/telemetry_scale.py --events 10000000
	$(PY) bench/pages.py
	$(PY) bench/api_load.py --seconds 30 --rate 200

bench-short: venv
	bash .ci/benchmarks.sh

clean:
	rm -rf $(VENV) var

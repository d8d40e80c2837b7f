# dunning: `make run` starts the whole service locally, `make test` runs the tests.
# `make soak` runs the fault tests at volume; `make bench` the benchmarks (see README, Performance).

VENV := .venv
PYTHON := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv lock browser snmpd compose-cli run lint test soak bench clean

venv: $(VENV)/.installed

# The pinned, hashed versions of requirements/dev.txt (runtime + dev + test), then the project itself;
# re-installs only when pyproject.toml or the lock changes.
$(VENV)/.installed: pyproject.toml requirements/dev.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --require-hashes -r requirements/dev.txt
	$(PYTHON) -m pip install --no-deps -e .
	touch $@

# Re-resolves the locks from pyproject.toml: requirements/runtime.txt (the image) and requirements/dev.txt.
LOCK := $(VENV)/bin/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command "make lock"
lock: venv
	$(LOCK) pyproject.toml -o requirements/runtime.txt
	$(LOCK) --extra dev --extra test pyproject.toml -o requirements/dev.txt

# Debian's Chromium for the Temporal UI test (a test tool's own browser download cannot work here).
browser:
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y -q chromium \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

# net-snmp's agent and tools, and iproute2, for the SNMP test that serves veth links from a network namespace.
snmpd:
	@command -v snmpd >/dev/null && command -v snmpget >/dev/null && command -v ip >/dev/null \
		|| $(SUDO) apt-get install -y -q snmpd snmp iproute2 \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q snmpd snmp iproute2)

# Debian's docker-compose (1.29): the deployment test runs its `config -q` on docker-compose.yml, no engine needed.
compose-cli:
	@command -v docker-compose >/dev/null || $(SUDO) apt-get install -y -q docker-compose \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q docker-compose)

run: venv
	$(VENV)/bin/dunning dev

# ruff's rules are in pyproject.toml
lint: venv
	$(VENV)/bin/ruff check .

test: venv browser snmpd compose-cli lint
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

# More invoices and more faults than `make test` runs; prints each test's one-line summary.
soak: venv
	DUNNING_SOAK=1 $(PYTHON) -m pytest -q -s tests/faults $(PYTEST_ARGS)

# Every measurement at the issue's sizes, report in bench/results/; e.g. BENCH_ARGS="--only lifecycle".
bench: venv
	$(PYTHON) -m bench $(BENCH_ARGS)

# Leaves data/ (the dev stack's invoices, events and mail) alone.
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

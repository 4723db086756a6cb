# Every target sets itself up from nothing: a ./.venv with the package, every optional extra and the dev tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint format benchmark breakit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[dev,all]"
	touch $(STAMP)

demo: install
	$(BIN)/kvasir demo --out demo_out

# The default suite: CPU only, offline, minutes. `make test-slow` runs the heaviest end-to-end checks (CI runs both).
# Both run in pytest-xdist workers, one per CPU (JOBS=0: in pytest's own process), a test file to a worker.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST := $(BIN)/python -m pytest -n $(JOBS) --dist loadfile

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PYTEST)

test-slow: install
	$(PYTEST) -m slow

# Break each behaviour on purpose and watch its test fail (minutes; outside the default suite): prints the table.
breakit: install
	$(BIN)/python tools/breakit.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo_out .pytest_cache

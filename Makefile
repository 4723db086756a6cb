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
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

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

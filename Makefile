# Two commands matter: `make demo` and `make test`. Both build the virtualenv first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint unit install clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sinergi up --simulate

test: $(STAMP)
	$(BIN)/ruff check services connectors tests
	$(BIN)/mypy services connectors
	$(BIN)/pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/component

bench: $(STAMP)
	$(BIN)/sinergi bench

lint: $(STAMP)
	$(BIN)/ruff check services connectors tests
	$(BIN)/ruff format --check services connectors tests
	$(BIN)/mypy services connectors

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Two commands matter: `make demo` and `make test`. Both build the virtualenv first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench chaos lint unit install clean system-deps

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sinergi up --simulate

# Prometheus (promtool, and a real server scraping the hub) and Chromium (the status page) come from
# Debian's packages: installed here when missing and running as root on Debian (CI); elsewhere the
# tests that need them say what is missing.
DEBIAN_PACKAGES := prometheus chromium
system-deps:
	@if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  command -v promtool >/dev/null || missing="$$missing prometheus"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	fi

test: $(STAMP) system-deps
	$(BIN)/ruff check services connectors tests
	$(BIN)/mypy services connectors
	$(BIN)/pytest -q -p no:cacheprovider --durations=25

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/component

bench: $(STAMP)
	$(BIN)/sinergi bench

# What the frameworks cost before any of sinergi's work (about 1 minute): a Faust stage that only forwards, and a
# FastAPI endpoint that only parses and answers (with and without Kafka's ack), beside the raw aiokafka loop.
.PHONY: bench-floor
bench-floor: $(STAMP)
	$(BIN)/python -m services.bench_floor

# The crash test at full size: ~52,000 mixed events (statements included), every processor SIGKILLed in turn.
chaos: $(STAMP)
	SINERGI_CHAOS_MEMBERS=15500 $(BIN)/pytest -q -p no:cacheprovider -s -o timeout=3600 tests/integration/test_crash_every_processor.py

# The long soak (issue 7): 100 raw events/s (what this 2-core machine holds) for 10 minutes on its own broker
# and hub; memory of every hub process and every stage's lag judged, then verified (about 11 minutes; it fails,
# with its figures, when the hub does not hold the rate). SINERGI_SOAK_RATE / SINERGI_SOAK_SECONDS override:
# 150/s held too (2026-12-07); SINERGI_SOAK_RATE=1000 is the issue's example, not held (see BENCHMARKS.md).
.PHONY: soak
soak: $(STAMP)
	SINERGI_SOAK_RATE=$${SINERGI_SOAK_RATE:-100} SINERGI_SOAK_SECONDS=$${SINERGI_SOAK_SECONDS:-600} \
	  $(BIN)/pytest -q -p no:cacheprovider -s tests/integration/test_soak.py

lint: $(STAMP)
	$(BIN)/ruff check services connectors tests
	$(BIN)/ruff format --check services connectors tests
	$(BIN)/mypy services connectors

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Two entry points: `make demo` and `make test`. Both create or reuse .venv.
# `make test-browser` also installs Chromium from the OS packages (apt-get, as root or through sudo) when it is
# missing, then opens the HTML report in it; `make test` runs those tests only where Chromium is already installed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test test-fast test-browser lint clean-results

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Without CUDA, install the CPU torch wheel first so that no multi-GB CUDA build is pulled.
$(STAMP): $(BIN)/python pyproject.toml
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/harness sweep experiments/quickstart.yaml
	$(BIN)/harness report quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_TESTS := tests/report/test_report_browser.py

test-browser: $(STAMP)
	@if [ -z "$$HARNESS_CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1 && \
		! command -v chromium-browser >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then \
		echo "installing chromium from the OS packages (apt-get)"; \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi
	$(BIN)/python -m pytest -q -rs $(BROWSER_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check harness judges tests

clean-results:
	rm -rf results/mlflow.db results/artifacts results/cache results/reports

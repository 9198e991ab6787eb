# Two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean browser-deps screenshot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tracer analyze fixtures/datajam/transactions.csv --out out/datajam

test: $(STAMP)
	$(BIN)/python -m pytest

browser-deps:
	apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver

screenshot: $(STAMP)
	TRACER_UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest tests/test_map_browser.py -k readme_screenshot

clean:
	rm -rf $(VENV) out

# Two commands: `make run` and `make test`. Both set everything up and are safe to run again.
# For the everyday loop: `make check` (lint, types and the fast tier: every test not marked slow or browser).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

# `make class` serves the class on this laptop's network (bnviz class); `make run` stays on 127.0.0.1.
.PHONY: run class test check lint format data install install-dev browser bench screenshots clean

run: install data
	$(PY) -m streamlit run dashboard.py --server.port $(PORT)

class: install data
	$(PY) -m bnviz class --port $(PORT)

test: install-dev data browser
	$(PY) -m pytest -q

# The fast tier: lint, types and every test not marked `slow` or `browser` (no data or chromium needed to start).
check: lint data
	$(PY) -m pytest -q -m "not slow and not browser"

lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: install-dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

$(PY):
	$(PYTHON) -m venv $(VENV)

# The package, editable, with the same dependency ranges as requirements.txt; reinstalled only when they change.
$(VENV)/.installed: pyproject.toml requirements.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation -e . 2>/dev/null || $(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Find Fashion-MNIST ($BNVIZ_DATA, ./data, Debian's dataset-fashion-mnist) or download it.
# Missing data is not fatal here: the dashboard says what to do, and the tests fail in CI (BNVIZ_REQUIRE_ALL=1).
data: install
	@$(PY) -m bnviz data || echo "bnviz: continuing without the data (see the message above)"

# Debian's chromium for the real-browser test, when it is missing and apt-get can install it.
browser:
	@command -v chromium >/dev/null 2>&1 || [ ! -x "$$(command -v apt-get)" ] || \
		{ [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null) || \
		  echo "bnviz: could not install chromium; the browser tests will skip (and fail in CI)"; }

bench: install
	$(PY) bench/benchmark.py

# Refresh the screenshots in docs/ (a test run writes them to a temporary folder).
screenshots: install-dev data browser
	BNVIZ_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q -m browser

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands: `make run` and `make test`. Both set everything up and are safe to run again.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test data install install-dev browser bench clean

run: install data
	$(PY) -m streamlit run dashboard.py --server.port $(PORT)

test: install-dev data browser
	$(PY) -m pytest -q

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the requirements change.
$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Find Fashion-MNIST ($BNVIZ_DATA, ./data, Debian's dataset-fashion-mnist) or download it.
# Missing data is not fatal here: the dashboard and the tests say what to do.
data: install
	@$(PY) -m bnviz data || echo "bnviz: continuing without the data (see the message above)"

# Debian's chromium for the real-browser test, when it is missing and apt-get can install it.
browser:
	@command -v chromium >/dev/null 2>&1 || [ ! -x "$$(command -v apt-get)" ] || \
		{ [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null) || \
		  echo "bnviz: could not install chromium; the browser test will be skipped"; }

bench: install
	$(PY) bench/benchmark.py

clean:
	rm -rf $(VENV) .pytest_cache

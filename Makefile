# Canopy: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DURATION ?= 0
EXTRAS ?= test,broker

.PHONY: demo test setup system-deps bench clean lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==24.3.1
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

# mosquitto (real broker for tests) and socat (pty pairs); installed when missing and we may.
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 || ! command -v socat >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto and socat"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto socat >/dev/null; \
	  else \
	    echo "note: mosquitto/socat missing and not root: run 'sudo apt-get install -y mosquitto socat'"; \
	  fi; \
	fi

demo: setup
	$(PY) -m gateway demo --duration $(DURATION)

test: system-deps setup
	$(PY) -m pytest -q

bench: system-deps setup
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .demo .pytest_cache

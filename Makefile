# Canopy: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DURATION ?= 0
SITE ?= farm
EXTRAS ?= test,broker,camera,centre

.PHONY: demo test setup system-deps models bench clean lint

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==24.3.1
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

# Pinned artefacts (LiteRT pose model, a sample photo for the camera simulator), sha256-verified.
models: setup
	$(PY) scripts/fetch_models.py

# mosquitto (real broker for tests), socat (pty pairs), postgresql (the centre's second store,
# started by its tests in a temp dir), chromium and a CJK font (the console's browser tests);
# installed when missing and we may.
SYSTEM_PACKAGES := mosquitto socat postgresql chromium fonts-wqy-microhei
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 || ! command -v socat >/dev/null 2>&1 \
	    || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 \
	    || ! ls /usr/share/fonts/truetype/wqy/wqy-microhei.ttc >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(SYSTEM_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else \
	    echo "note: some of $(SYSTEM_PACKAGES) are missing and we are not root: run 'sudo apt-get install -y $(SYSTEM_PACKAGES)'"; \
	  fi; \
	fi

demo: setup models
	$(PY) -m simulator demo --site $(SITE) --duration $(DURATION)

# two workers: tests/integration (real daemons, real time) stays together on one of them (tests/conftest.py)
TEST_WORKERS ?= 2
test: system-deps setup models lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

bench: system-deps setup models
	$(PY) bench/ingest.py
	$(PY) bench/startup.py
	$(PY) bench/backlog.py
	$(PY) bench/rtu_bus.py
	$(PY) bench/camera.py
	$(PY) bench/chaos.py --cycles 500
	$(PY) bench/looplag.py
	$(PY) bench/centre_ingest.py

# pyflakes-level checks (undefined names, unused imports and variables), then the layer contracts
# (pyproject.toml [tool.importlinter]: core <- drivers | inference <- gateway <- simulator, no cycles).
lint: setup
	$(PY) -m ruff check --select F --output-format concise .
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) .demo .pytest_cache

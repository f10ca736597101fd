# The two commands of the README (make demo, make test) set themselves up: they create .venv
# from the lock file when it is missing or older than the lock. --no-compile: byte-compiling
# all of torch takes longer than the install itself (70 s of 150 here); Python compiles what
# it imports on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export PYTHONUNBUFFERED := 1

.PHONY: demo test install clean-outputs

install: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/train.py experiment=demo $(ARGS)

# The tests also need the I3D reference implementation (JAX) and ruff; the demo does not.
TEST_STAMP := $(VENV)/.installed-test

$(TEST_STAMP): $(STAMP) requirements/test-lock.txt
	$(PY) -m pip install -q --no-compile -r requirements/test-lock.txt -c requirements/lock.txt
	touch $(TEST_STAMP)

# Lint first (ruff, configured in pyproject.toml): seconds, and it fails before a 10-minute run.
test: $(TEST_STAMP)
	$(PY) -m ruff check videocls tools tests
	$(PY) -m pytest -q --durations=15 tests

clean-outputs:
	rm -rf outputs multirun

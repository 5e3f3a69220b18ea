# Set-up and the two everyday jobs. Everything installs into .venv; works offline on a machine that has
# the local CPU build of torch 2.13.0 (as the README says).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-kernels bench docs lint typecheck mutate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## train the default model (fully connected monDEQ) on the embedded mnist-mini
	$(BIN)/mondeq train --out runs/demo --overwrite

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest -q

# The numerical tests once more under a second set of CPU kernels (avx2 where PyTorch picks AVX-512,
# else the portable default), so that a test that only passes by the round-off of one set fails everywhere.
NUMERICAL := tests/test_activations.py tests/test_operators.py tests/test_solvers.py tests/test_anderson.py \
             tests/test_gradients.py tests/test_conv.py tests/test_multitier.py tests/test_nemon.py \
             tests/test_opteq.py tests/test_interval.py
test-kernels: $(STAMP)
	@cap=$$($(BIN)/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"); \
	second=$$([ "$$cap" = AVX512 ] && echo avx2 || echo default); \
	echo "numerical tests under ATEN_CPU_CAPABILITY=$$second (PyTorch's own choice here: $$cap)"; \
	ATEN_CPU_CAPABILITY=$$second $(BIN)/python -c "import torch; print('  kernels in use:', torch.backends.cpu.get_cpu_capability())"; \
	ATEN_CPU_CAPABILITY=$$second $(BIN)/python -m pytest -q $(NUMERICAL)

bench: $(STAMP)  ## solver benchmark of the MNIST-sized fully connected model
	$(BIN)/python benchmarks/bench_fc.py

mutate: $(STAMP)  ## mutation testing of the core (hours; not part of CI): tools/mutate.sh, report in runs/mutation/
	tools/mutate.sh

docs: $(STAMP)  ## the documentation site in site/ (MkDocs; warnings are errors)
	$(BIN)/pip install --quiet -e '.[docs]'
	$(BIN)/mkdocs build --strict --quiet

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check src tests benchmarks tools examples

typecheck: $(STAMP)  ## static types of the package (mypy, configured in pyproject.toml)
	$(BIN)/pip install --quiet mypy
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs site .pytest_cache

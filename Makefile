# Two entry points: `make demo` (a short paper-setting coevolution) and `make test`.
# Both first install coevo into a local virtualenv (.venv). torch is pinned to the 2.13.0 CPU
# build first, so the open range in pyproject.toml does not pull a newer CUDA build.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
# Extras installed with coevo: the test suite (it includes tensorboard, for the TensorBoard
# observer's tests), Ray (the ray engine and its tests), export (onnx, onnxruntime: `coevo export
# --format onnx`), analysis (scikit-dimension, scikit-learn: `coevo analyze`) and docs (MkDocs: `make docs`).
# `make EXTRAS=test ...` leaves the others out; their tests are then skipped.
EXTRAS ?= test,ray,export,analysis,docs

.PHONY: install demo test bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -c "import numba, numpy, torch; print('numpy', numpy.__version__, 'numba', numba.__version__, 'torch', torch.__version__)"
	$(BIN)/python -m coevo.training.warmup    # compile and cache the Numba kernels now, not in the first run
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/coevo run --set run.generations=100

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on broken links and references.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site

# The two set-up commands of the README: `make demo` and `make test`.
# Both create/refresh .venv themselves (the stamp file is rebuilt when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-gpu bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/autoglm-trt pipeline --out engines/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# GPU suite in the NVIDIA TensorRT image (default tag: CUDA 13.0 -> host driver >= 580, NVIDIA Container
# Toolkit for --gpus all; for a CUDA 12 tag pass --build-arg CUDA_EXTRA=cuda12). See docs/gpu.md.
test-gpu:
	docker build -t autoglm-trt:gpu .
	docker run --rm --gpus all autoglm-trt:gpu python -m pytest -q -m gpu tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_small.py

clean:
	rm -rf $(VENV) engines/demo .pytest_cache

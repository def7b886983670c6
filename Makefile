# Set-up and the two commands of README.md. Everything installs into ./.venv.
#
#   make demo   set up, then run the main job on the built-in simulated cohort
#   make test   set up, then run the whole CPU test suite (what .ci/run runs)
#
# torch: on a machine without an NVIDIA GPU the CPU wheel is installed explicitly (TORCH_SPEC),
# never the multi-GB CUDA build that a bare `torch` requirement pulls. Where the CPU wheel is not
# on local disk, add TORCH_INDEX=https://download.pytorch.org/whl/cpu.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
HAS_GPU     := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC  ?= $(if $(HAS_GPU),torch>=2.6,torch==2.13.0)
TORCH_INDEX ?=
PIP         := $(BIN)/python -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -e ".[dev,preprocess]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/neurosepclr run pipelines/demo.yaml

test: setup
	$(BIN)/python -m pytest -m "not gpu" --durations=20 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not gpu and not ddp and not multiprocess" -x $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

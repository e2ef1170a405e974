#!/usr/bin/env bash
# One GPU window (issue 17, part 4), run on the GPU machine from the repository root:
#
#   ./device-kit/window.sh DURATION [BRAIN_MODEL [LIVER_MODEL]]      # e.g. 8m
#
# Continues the brain-mri and liver-ct models side by side (default: the shipped ones in models/;
# or models fetched back from an earlier window and committed or carried) with `layerseg pretrain
# --init-from ... --max-time DURATION`, so both stop cleanly, checkpoint and export before the
# deadline. Their model cards add this session to their history. Then it packs each run's model,
# card, metrics and curves into $OUT as runs.tar.part-NN (15 MiB pieces: a file coming back is
# capped at 16 MiB), with the logs and `layerseg runtime`'s report.
# LAYERSEG_DEVICE=cpu runs the same on the CPU, as a rehearsal.
set -euo pipefail
KIT=$(cd "$(dirname "$0")" && pwd)
DURATION=${1:?usage: window.sh DURATION [BRAIN_MODEL [LIVER_MODEL]]}
BRAIN_INIT=${2:-models/brain-mri.safetensors}
LIVER_INIT=${3:-models/liver-ct.safetensors}
: "${OUT:?OUT must name the folder whose files come back (the device tool sets it)}"

have=$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')
want=$(cat "$KIT/bin/TORCH_VERSION")
if [ "$have" != "$want" ]; then
  echo "error: this machine's torch is $have; the kit's layerseg was built for $want: rebuild it with device/build_kit.sh $have" >&2
  exit 1
fi
# The binary links the libtorch of this machine's torch (the kit carries none).
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The binary runs from a temporary folder, so it is told where the repository's models are.
export LAYERSEG_MODELS=$PWD/models
WORK=$(mktemp -d)
L=$WORK/layerseg
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
  "$KIT/bin/layerseg.xz" "$L"
chmod +x "$L"
"$L" runtime | tee "$OUT/runtime.txt"

D=$KIT/data
RUNS=$WORK/runs
workers=$(($(nproc) / 2 - 1))
common=(--device "${LAYERSEG_DEVICE:-cuda}" --workers "$workers" --seed 1 --checkpoint-every 500 --max-time "$DURATION")
"$L" pretrain --profile brain-mri --init-from "$BRAIN_INIT" "${common[@]}" \
  --healthy "$D"/{colin27,sri24,itk_t1}/image.nii.gz \
  --organ-masks "$D"/{colin27,sri24,itk_t1}/brain.nii.gz \
  --out "$RUNS/brain" >"$OUT/brain.log" 2>&1 &
brain=$!
"$L" pretrain --profile liver-ct --init-from "$LIVER_INIT" "${common[@]}" \
  --healthy "$D/totalseg_ct/image.nii.gz" --organ-masks "$D/totalseg_ct/liver.nii.gz" \
  --textures "$D/totalseg_ct/image.nii.gz" "$D/lits117/image.nii.gz" \
  --out "$RUNS/liver" >"$OUT/liver.log" 2>&1 &
liver=$!
status=0
wait "$brain" || status=$?
wait "$liver" || status=$?
tail -n 2 "$OUT/brain.log" "$OUT/liver.log"

files=()
for run in brain liver; do
  for f in model.safetensors model.json metrics.jsonl curves.png; do
    [ -f "$RUNS/$run/$f" ] && files+=("$run/$f")
  done
done
tar -C "$RUNS" -cf "$WORK/runs.tar" "${files[@]}"
split -b 15M -d "$WORK/runs.tar" "$OUT/runs.tar.part-"
ls -l "$OUT"
exit "$status"

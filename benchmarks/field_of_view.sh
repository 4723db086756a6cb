#!/usr/bin/env bash
# The audit loop on frames that betray their source (issue 22): audit, mask, train, audit again.
#
# A synthetic set whose classes each have their own frame outline and device icon (kvasir synth --frames per-class),
# two trainings on one split (as is, and with --data.field_of_view common), the audit of each, and both models on new
# images that all share one frame (tools/frame_shift.py: paired non-inferiority). About 5 minutes on a 2-core CPU.
#
#   bash benchmarks/field_of_view.sh        # writes benchmarks/results/field_of_view/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run make install first"; exit 1; }
IMAGES=${IMAGES:-80}
OUT_DIR=${OUT_DIR:-benchmarks/results/field_of_view}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
KVASIR=("$PY" -m kvasir_mobileone)
CLASSES='[dyed-lifted-polyps, esophagitis, polyps, ulcerative-colitis]'
mkdir -p "$OUT_DIR"

"${KVASIR[@]}" synth --dest "$WORK/framed" --classes "$CLASSES" --frames per-class --images_per_class "$IMAGES" \
  --scale 0.1 --seed 0 >/dev/null
"${KVASIR[@]}" synth --dest "$WORK/one-frame" --classes "$CLASSES" --images_per_class "$IMAGES" --scale 0.1 \
  --seed 1 >/dev/null
"${KVASIR[@]}" eda --data_dir "$WORK/framed" --out "$WORK/eda" --samples_per_class 2 | grep "^The frame"
cp "$WORK/eda/frame_maps.png" "$OUT_DIR/frame_maps.png"
common=(--data.data_dir "$WORK/framed" --data.image_size 32 --data.batch_size 16 --data.num_workers 0
  --data.test_fraction 0.3 --model.name resnet10t --model.pretrained false --model.lr 0.003
  --model.lr_reference_batch 16 --trainer.max_epochs 8 --trainer.logger csv --trainer.runs_dir "$WORK/runs"
  --trainer.seed 0 --trainer.enable_progress_bar false)
"${KVASIR[@]}" fit "${common[@]}" --trainer.run_name plain | grep -E "^Test on"
"${KVASIR[@]}" audit "$WORK/runs/plain" --occlusion_per_class 4 2>/dev/null | grep -E "^\*\*Verdict|^Frame swap|^Shortcut"
"${KVASIR[@]}" fit "${common[@]}" --trainer.run_name masked --data.field_of_view common \
  --data.manifest "$WORK/runs/plain/split_manifest.csv" | grep -E "^Test on|^--data.field_of_view"
"${KVASIR[@]}" audit "$WORK/runs/masked" --occlusion_per_class 4 2>/dev/null | grep -E "^\*\*Verdict|^Frame swap|^Shortcut"
for run in plain masked; do
  mkdir -p "$OUT_DIR/$run"
  cp "$WORK/runs/$run/audit/report.md" "$WORK/runs/$run/audit/audit.json" "$WORK/runs/$run/audit/frame_swap.png" \
    "$OUT_DIR/$run/"
done
cp "$WORK/runs/masked/field_of_view.png" "$OUT_DIR/masked/"
"$PY" tools/frame_shift.py --plain "$WORK/runs/plain" --masked "$WORK/runs/masked" --data "$WORK/one-frame" \
  --out "$OUT_DIR/frame_shift.json" 2>/dev/null | head -8

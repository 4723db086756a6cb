#!/usr/bin/env bash
# Which validation metric should pick the checkpoint on imbalanced classes? (issue 21)
#
# A HyperKvasir-shaped synthetic set (23 classes in its nested layout, HyperKvasir's class proportions with the largest
# class at IMAGES images, at least 2 per class), one split, one seed; the same training three times, changing only
# --trainer.monitor and --model.class_weights; then `kvasir compare` on the shared test images: accuracy, macro-F1
# and balanced accuracy with 95% intervals, McNemar for each pair. About 15 minutes on a 2-core CPU.
#
#   bash benchmarks/selection.sh            # writes benchmarks/results/selection/{comparison.md,comparison.json,...}
#
# Training on a CPU is deterministic here with a fixed seed, so runs that differ only in --trainer.monitor differ
# only in the epoch whose checkpoint they keep.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run make install first"; exit 1; }
IMAGES=${IMAGES:-100}
EPOCHS=${EPOCHS:-10}
OUT_DIR=${OUT_DIR:-benchmarks/results/selection}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
KVASIR=("$PY" -m kvasir_mobileone)

"${KVASIR[@]}" synth --dest "$WORK/hk" --layout hyper-kvasir --sizes hyper-kvasir --images_per_class "$IMAGES" \
  --scale 0.1 --seed 0 >/dev/null
common=(--data.data_dir "$WORK/hk/labeled-images" --data.image_size 32 --data.batch_size 32 --data.num_workers 0
  --model.name mobileone_s0 --model.pretrained false --model.lr 0.003 --model.lr_reference_batch 32
  --trainer.max_epochs "$EPOCHS" --trainer.logger csv --trainer.runs_dir "$WORK/runs" --trainer.seed 0
  --trainer.enable_progress_bar false)
"${KVASIR[@]}" fit "${common[@]}" --trainer.run_name acc --trainer.monitor val/acc | grep -E "^Test on|^Run folder"
same=(--data.manifest "$WORK/runs/acc/split_manifest.csv")
"${KVASIR[@]}" fit "${common[@]}" "${same[@]}" --trainer.run_name f1 --trainer.monitor val/f1_macro |
  grep -E "^Test on"
"${KVASIR[@]}" fit "${common[@]}" "${same[@]}" --trainer.run_name f1-weighted --trainer.monitor val/f1_macro \
  --model.class_weights balanced | grep -E "^Test on"
mkdir -p "$OUT_DIR"
"${KVASIR[@]}" compare "$WORK/runs/acc" "$WORK/runs/f1" "$WORK/runs/f1-weighted" --out "$OUT_DIR"
for run in acc f1 f1-weighted; do  # which epoch each selection kept
  "$PY" - "$WORK/runs/$run" <<'EOF'
import sys, torch
from pathlib import Path
run = Path(sys.argv[1])
ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
print(f"{run.name}: best.ckpt from epoch {ckpt['epoch']}")
EOF
done | tee "$OUT_DIR/epochs.txt"

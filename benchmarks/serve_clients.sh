#!/usr/bin/env bash
# `kvasir serve` under 8 clients at once against one at a time (issue 24): a small MobileOne bundle (64 px, trained
# for a few epochs: its accuracy does not matter here), then benchmarks/serve_clients.py. About 5 minutes on 2 cores.
#
#   bash benchmarks/serve_clients.sh        # writes benchmarks/results/serve/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run make install first"; exit 1; }
OUT_DIR=${OUT_DIR:-benchmarks/results/serve}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
KVASIR=("$PY" -m kvasir_mobileone)
# frames at half Kvasir's resolutions (360x288 to 960x536), as a page would receive them
"${KVASIR[@]}" synth --dest "$WORK/data" --classes '[esophagitis, polyps, normal-cecum, ulcerative-colitis]' \
  --images_per_class 24 --scale 0.5 --seed 0 >/dev/null
"${KVASIR[@]}" fit --data.data_dir "$WORK/data" --data.image_size 64 --data.batch_size 16 --data.num_workers 0 \
  --model.name mobileone_s0 --model.pretrained false --model.lr_reference_batch 16 --trainer.precision 32-true \
  --trainer.max_epochs 2 --trainer.logger none --trainer.runs_dir "$WORK/runs" --trainer.run_name r \
  --trainer.enable_progress_bar false | grep -E "^Test on"
"${KVASIR[@]}" export "$WORK/runs/r" --out "$WORK/bundle" | grep -E "^onnxruntime"
"$PY" benchmarks/serve_clients.py --model "$WORK/bundle" --images "$WORK/data" --clients 8 --rounds 5 --out "$OUT_DIR"

#!/usr/bin/env bash
# GPU check (issues 14 and 36) on one H100/H200: training images/s for MobileOne s0 and s3 at 224 px, the previous
# data path against the current one, GPU utilisation, the fraction of the GPU's own bf16 matmul speed and a lower
# bound on the step's memory bandwidth against the copy bandwidth measured in the same run; each compile mode
# (default, reduce-overhead) cold and warm cache; a profiler summary of an s0 step; then a timed 30-epoch
# Kvasir-sized s3 run eager, the same run compiled on the warm cache and with the training recipe (issue 49),
# with their paired accuracy comparisons.
#
#   bash benchmarks/gpu_check.sh              # from a fresh clone, after `make install`
#   bash benchmarks/gpu_check.sh --accuracy   # also: old path vs new path, same seed and split, test accuracy
#
# Without .venv it uses python3 with src/ on the path: an image that already has torch, torchvision, timm,
# lightning, torchmetrics, numpy, scipy, scikit-learn, matplotlib, pillow, pyyaml, tqdm, safetensors, onnx and
# onnxruntime needs `pip install "jsonargparse[signatures]" kornia imagehash nvidia-ml-py` (the check below says).
# Writes benchmarks/results/gpu/{benchmark.md,benchmark.json,fit_30_epochs.md,compiled_vs_eager/} (OUT_DIR=...).
# Not yet timed as a whole on a GPU (issue 36): BENCH_ARGS trims the benchmark if it runs past 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=${PYTHON:-python3}
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
OUT_DIR=${OUT_DIR:-benchmarks/results/gpu}
ACCURACY=0
[ "${1:-}" = "--accuracy" ] && ACCURACY=1

"$PY" - <<'EOF'
import importlib.util, sys
need = {"torch": "torch", "torchvision": "torchvision", "timm": "timm", "lightning": "lightning",
        "torchmetrics": "torchmetrics", "scipy": "scipy", "sklearn": "scikit-learn", "matplotlib": "matplotlib",
        "yaml": "pyyaml", "onnx": "onnx", "onnxruntime": "onnxruntime", "safetensors": "safetensors",
        "jsonargparse": "jsonargparse[signatures]", "kornia": "kornia", "imagehash": "imagehash",
        "pynvml": "nvidia-ml-py"}
missing = [package for module, package in need.items() if importlib.util.find_spec(module) is None]
if missing:
    sys.exit("gpu_check.sh needs: pip install " + " ".join(f"'{p}'" for p in missing))
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check.sh needs a CUDA GPU: torch.cuda.is_available() is False here.")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
EOF

KVASIR=("$PY" -m kvasir_mobileone)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT_DIR"

echo "== 0. the tests that need CUDA (skipped with the reason on CPU machines) =="
if "$PY" -c "import pytest" 2>/dev/null; then
  KVASIR_TEST_GPU=1 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
else
  echo "note: pytest is not installed for $PY: the CUDA tests did not run (pip install pytest)"
fi

echo "== 1. training speed: previous path against current; compile modes cold and warm; a profiler summary =="
# No configuration (compile rows included) starts after --gpu_budget_s; those left are listed as not measured.
# BENCH_ARGS replaces the flags below, e.g. BENCH_ARGS='--gpu_budget_s 400 --gpu_compile_modes [default]'.
# shellcheck disable=SC2086
"${KVASIR[@]}" benchmark --device cuda --out "$OUT_DIR" --gpu_compile_cache "$WORK/inductor" \
  ${BENCH_ARGS:---gpu_budget_s 120 --gpu_models "[mobileone_s0, mobileone_s3]" --gpu_ablate "[]"}

echo "== 2. a 30-epoch Kvasir-sized s3 run (8 classes x 1,000 synthetic JPEGs at 0.3 of Kvasir's sizes) =="
CLASSES=(dyed-lifted-polyps dyed-resection-margins esophagitis normal-cecum normal-pylorus normal-z-line polyps
  ulcerative-colitis)
pids=()
for i in "${!CLASSES[@]}"; do  # one process per class: 8,000 images in seconds
  "${KVASIR[@]}" synth --dest "$WORK/kvasir" --images_per_class 1000 --scale 0.3 --seed "$i" \
    --classes "[${CLASSES[$i]}]" >"$WORK/synth_$i.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { tail -5 "$WORK/synth_$i.log"; echo "error: synth of ${CLASSES[$i]} failed"; exit 1; }
done
# fit: the whole log in $WORK/fit.log, its key lines here; a failing fit stops the script with its last lines
fit_or_fail() {
  local log=$1
  shift
  if ! "${KVASIR[@]}" fit "$@" >"$log" 2>&1; then
    tail -20 "$log"
    echo "error: kvasir fit failed (log above)"
    exit 1
  fi
  grep -E "^(Learning rate|images at|Test on|Run folder)|held in" "$log" || true
}
s3_30() {  # NAME, then extra fit flags; the wall time, start-up included, in $WORK/NAME.s
  local name=$1
  shift
  local start end
  start=$(date +%s.%N)
  fit_or_fail "$WORK/$name.log" --data.data_dir "$WORK/kvasir" --model.name mobileone_s3 --model.pretrained false \
    --trainer.max_epochs 30 --trainer.logger csv --trainer.runs_dir "$WORK/runs" --trainer.run_name "$name" \
    --trainer.enable_progress_bar false "$@"
  end=$(date +%s.%N)
  echo "$start $end" >"$WORK/$name.s"
}
s3_30 eager --trainer.compile off
# the same split, compiled, on the cache the benchmark filled for s3 (same batch, size, precision and layout)
TORCHINDUCTOR_CACHE_DIR="$WORK/inductor/mobileone_s3-default" s3_30 compiled --trainer.compile default \
  --data.manifest "$WORK/runs/eager/split_manifest.csv"
# the recipe (issue 49) on the same split, on the GPU path (resident batches): EMA, Mixup/CutMix, drop path
s3_30 recipe --trainer.compile off --data.manifest "$WORK/runs/eager/split_manifest.csv" --model.ema 0.999 \
  --model.mixup 0.2 --model.cutmix 1.0 --model.drop_path 0.05 --model.label_smoothing 0.1
"${KVASIR[@]}" compare "$WORK/runs/eager" "$WORK/runs/compiled" "$WORK/runs/recipe" \
  --out "$OUT_DIR/compiled_vs_eager" >/dev/null
"$PY" - "$WORK" "$OUT_DIR" <<'EOF'
import json, sys, yaml
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for name in ("eager", "compiled", "recipe"):
    run = work / "runs" / name
    start, end = map(float, (work / f"{name}.s").read_text().split())
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    t = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    rows.append(f"| {name} | {t['compile']} | {end - start:.0f} s | {100 * metrics['accuracy']:.1f}% | {metrics['n']} |")
pair = json.loads((out / "compiled_vs_eager" / "comparison.json").read_text())["pairs"][0]
low, high = pair["accuracy_difference_ci"]
text = ("# 30-epoch Kvasir-sized s3 runs\n\n`kvasir fit` on 8,000 synthetic images (6,400 training), from scratch, "
        "GPU defaults, the same split; the compiled run on a warm inductor cache.\n\n"
        "| run | compile | wall time, start-up included | test accuracy | n |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nAccuracy, eager - compiled: {100 * pair['accuracy_difference']:+.2f} points, 95% CI "
        f"[{100 * low:+.2f}, {100 * high:+.2f}], McNemar p = {pair['p_value']:.3g} "
        f"({out / 'compiled_vs_eager' / 'comparison.md'}).\n")
recipe = json.loads((out / "compiled_vs_eager" / "comparison.json").read_text())["pairs"][1]  # eager - recipe
low, high = recipe["accuracy_difference_ci"]
text += (f"\nAccuracy, eager - recipe (EMA, Mixup/CutMix, drop path, label smoothing): "
         f"{100 * recipe['accuracy_difference']:+.2f} points, 95% CI [{100 * low:+.2f}, {100 * high:+.2f}], "
         f"McNemar p = {recipe['p_value']:.3g}.\n")
(out / "fit_30_epochs.md").write_text(text)
print(text)
EOF

if [ "$ACCURACY" = 1 ]; then
  echo "== 3. same accuracy: s3 on the previous path and on the current one, same seed and split =="
  "${KVASIR[@]}" synth --dest "$WORK/small" --images_per_class 250 --scale 0.3 >"$WORK/synth_small.log" 2>&1
  common=(--model.name mobileone_s3 --model.pretrained false --trainer.max_epochs 10 --trainer.logger csv
    --trainer.runs_dir "$WORK/runs" --trainer.enable_progress_bar false)
  fit_or_fail "$WORK/current.log" --data.data_dir "$WORK/small" "${common[@]}" --trainer.run_name current
  fit_or_fail "$WORK/previous.log" --data.data_dir "$WORK/small" "${common[@]}" --trainer.run_name previous \
    --data.manifest "$WORK/runs/current/split_manifest.csv" --data.loader workers --data.augment_on kornia \
    --data.batch_size 32
  "${KVASIR[@]}" compare "$WORK/runs/previous" "$WORK/runs/current" --out "$OUT_DIR/accuracy"
fi

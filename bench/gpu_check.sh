#!/usr/bin/env bash
# GPU readiness in one go, on a CUDA machine (README, "GPU check"): the CUDA-marked tests, the bench of every family
# at paper size in bf16 (eager, torch.compile inductor, CUDA graphs) and a 5-minute TRM-MLP Sudoku run, summed up in
# one JSON. Usage, from the repository root:
#     bench/gpu_check.sh [OUT_DIR]          (default runs/gpu-check-<time>; writes OUT_DIR/gpu_check.json)
# Environment: PY (default .venv/bin/python, made by `make install`), MINUTES (training budget, default 5),
# SUDOKU_CSV (train data for the run; default ../shared/data/sudoku/tdoku-hard.csv, else generated 9x9 puzzles).
# Each part runs even when an earlier one failed; its exit status and log are in the JSON.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MINUTES=${MINUTES:-5}
OUT=${1:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
SUDOKU_CSV=${SUDOKU_CSV:-../shared/data/sudoku/tdoku-hard.csv}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available to $PY (a CPU-only torch, or no GPU): nothing to check" >&2
    exit 2
fi

status() { echo "$1=$2" >> "$OUT/status.txt"; }
: > "$OUT/status.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

echo "[1/4] CUDA-marked tests"
"$PY" -m pytest -q -m cuda -p no:cacheprovider --junitxml="$OUT/cuda-tests.xml" > "$OUT/cuda-tests.log" 2>&1
status tests $?
tail -n 3 "$OUT/cuda-tests.log"

echo "[2/4] bench, paper size, bf16: eager, inductor, cudagraphs"
for mode in off inductor cudagraphs; do
    "$PY" -m ponder bench --device cuda --sizes paper --dtypes bfloat16 --compile "$mode" \
        --out "$OUT/bench-$mode.json" > "$OUT/bench-$mode.log" 2>&1
    status "bench_$mode" $?
    grep -E "^\s+(trm|hrm|urm|transformer)" "$OUT/bench-$mode.log" || tail -n 3 "$OUT/bench-$mode.log"
done

echo "[3/4] $MINUTES-minute TRM-MLP Sudoku run (bf16, paper config)"
if [ -f "$SUDOKU_CSV" ]; then
    data=("data.sudoku.csv=$SUDOKU_CSV" "data.sudoku.train_size=1000" "data.sudoku.test_size=1000")
else
    data=("data.sudoku.size=9" "data.sudoku.train_size=1000" "data.sudoku.test_size=500" "data.sudoku.num_aug=100")
fi
"$PY" -m ponder train sudoku-extreme-trm-mlp --out "$OUT/run" train.device=cuda train.dtype=auto \
    "train.max_minutes=$MINUTES" train.checkpoint_every=1000 "${data[@]}" > "$OUT/run.log" 2>&1
status train $?
"$PY" -m ponder eval "$OUT/run" --device cuda > "$OUT/eval.log" 2>&1
status eval $?
tail -n 12 "$OUT/eval.log"

echo "[4/4] summary"
"$PY" - "$OUT" <<'EOF'
import json, sys, platform
from pathlib import Path

import torch

out = Path(sys.argv[1])
status = dict(line.strip().split("=") for line in (out / "status.txt").read_text().splitlines() if "=" in line)
summary = {"machine": {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
                       "torch": torch.__version__, "cuda": torch.version.cuda, "platform": platform.platform()},
           "exit_status": {k: int(v) for k, v in status.items()}, "bench": {}, "run": None}
for mode in ("off", "inductor", "cudagraphs"):
    path = out / f"bench-{mode}.json"
    if path.is_file():
        runs = json.loads(path.read_text())["runs"]
        summary["bench"][mode] = {dt: {label: {k: r.get(k) for k in ("train_examples_per_s", "eval_examples_per_s",
                                                                     "train_gflops", "ceiling_ratio", "vs_official",
                                                                     "peak_mb")}
                                       for label, r in run.get("configs", {}).items()}
                                  for dt, run in runs.items()}
metrics = out / "run" / "metrics.jsonl"
if metrics.is_file():
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [m for m in lines if "loss" in m]
    summary["run"] = {"steps": train[-1]["step"] if train else 0, "last": train[-1] if train else None}
evaluated = out / "run" / "eval" / "results.json"
if evaluated.is_file():
    summary["eval"] = json.loads(evaluated.read_text())
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({"exit_status": summary["exit_status"], "run_steps": (summary["run"] or {}).get("steps")}))
print(f"wrote {out / 'gpu_check.json'}")
EOF

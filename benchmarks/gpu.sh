#!/usr/bin/env bash
# The GPU check, within about 10 minutes on one GPU: the CUDA tests, the benchmark table on the GPU, and as
# many epochs of a CIFAR-10 preset as fit (the full data set when DATA_DIR holds it, else the convolutional
# model on the embedded mnist-mini for the epoch time). Everything goes to the folder given (default
# runs/gpu, or $OUT/gpu when OUT is set), one file per part, with a summary.txt.
#
#     benchmarks/gpu.sh [FOLDER]          # PYTHON=... to choose the interpreter, DATA_DIR=... for CIFAR-10
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:+$OUT/gpu}}
out=${out:-runs/gpu}
mkdir -p "$out"
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

note "started $(date -u +%FT%TZ)"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || note "nvidia-smi failed"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
    >> "$summary" 2>&1 || { note "no CUDA device visible to torch: stopping"; exit 1; }

timeout 150 "$py" -m pytest -q tests/test_cuda.py tests/test_gradients.py -k "cuda or gpu or autocast" \
    > "$out/cuda-tests.txt" 2>&1
note "CUDA tests (rc $?): $(tail -n 1 "$out/cuda-tests.txt")"

for model in fc conv multitier nemon-fc; do
    dataset=$([ "$model" = fc ] || [ "$model" = nemon-fc ] && echo mnist-mini || echo cifar10)
    timeout 60 "$py" -m mondeq.cli bench --model "$model" --dataset "$dataset" --device cuda --reps 5 --json \
        > "$out/bench-$model.json" 2> "$out/bench-$model.err"
    note "bench $model on $dataset (rc $?): $(head -c 300 "$out/bench-$model.json" | tr -d '\n')"
done

if [ -n "${DATA_DIR:-}" ] && [ -d "$DATA_DIR" ]; then
    train=(--preset cifar10-conv --data-dir "$DATA_DIR")
else
    train=(--model conv --dataset mnist-mini)
fi
timeout 300 "$py" -m mondeq.cli train "${train[@]}" --device cuda --epochs 40 --no-progress \
    --out "$out/train" --overwrite > "$out/train.log" 2>&1
note "training (rc $?, 124 = stopped by the time limit; every finished epoch is in metrics.jsonl):"
[ -f "$out/train/metrics.jsonl" ] && "$py" - "$out/train/metrics.jsonl" >> "$summary" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    print(f"  epoch {m['epoch']}: test {100 * m['test_acc']:.2f}%, {m['epoch_time_s']:.1f} s, "
          f"iterations fwd {m['fwd_iters']:.1f} bwd {m['bwd_iters']:.1f}")
PY
rm -f "$out/train/checkpoint.pt"  # the figures travel, not the weights
note "finished $(date -u +%FT%TZ)"

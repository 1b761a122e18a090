#!/usr/bin/env bash
# One script that checks every GPU path of hwnas on a machine with a CUDA GPU, in a few minutes:
#
#   bash bench/gpu_check.sh            # from the repository root; PYTHON=... picks the interpreter
#
# * installs what it needs: pip install -e '.[tensorrt]', and onnxruntime-gpu in place of the CPU onnxruntime when
#   the CUDA execution provider is missing (HWNAS_GPU_CHECK_NO_INSTALL=1 skips both);
# * hwnas profile --device cuda for proxyless at 224 with torch (CUDA events), onnxruntime (CUDA execution provider),
#   tensorrt fp32, --fp16 and --precision int8 (entropy calibrator), each followed by hwnas tables validate --n 10;
# * onnxruntime's TensorRT execution provider: the CLI has no flag to choose it, so a few nets are timed through
#   hwnas.latency.runtimes.get_runtime("onnxruntime", device="cuda", provider="tensorrt");
# * a short hwnas search --device cuda (its own small table, torch runtime), hwnas export --runtime tensorrt of its
#   child with the verdict (PASS/FAIL is a result, not a failure of the check: export exits 1 on FAIL);
# * a 2-GPU torchrun search (NCCL) when two GPUs are present; tests/test_latency_gpu.py.
#
# It prints one summary table and exits 1 if any step failed. On a machine without a CUDA GPU it says so and exits 0
# (CI runs that part: tests/test_gpu_check.py). Output and tables land in $HWNAS_GPU_CHECK_OUT (default: a temp dir).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${HWNAS_GPU_CHECK_OUT:-$(mktemp -d -t hwnas-gpu-check.XXXXXX)}
mkdir -p "$OUT"

has_gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$has_gpu" != "1" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu_check: nvidia-smi lists a GPU but torch sees no CUDA GPU (a CPU-only torch build?)" >&2
        exit 1
    fi
    echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check, exit 0"
    exit 0
fi

HWNAS=("$PY" -m hwnas)
SUMMARY=()
FAILED=0
QUICK=(--rounds 1 --min-time 0.02 --warmup-time 0.02 --no-progress)

# step NAME SECONDS CMD...: run CMD with a time limit, log it, and add a row to the summary
step() {
    local name=$1 limit=$2
    shift 2
    local log="$OUT/${name//[^A-Za-z0-9_.-]/_}.log" started=$SECONDS status
    echo "== $name: $*" | tee "$log"
    timeout "$limit" "$@" >>"$log" 2>&1
    status=$?
    local spent=$((SECONDS - started)) note
    note=$(tail -n 1 "$log" | cut -c1-70)
    if [ "$status" = 0 ]; then
        SUMMARY+=("$(printf '%-34s %-6s %5ss  %s' "$name" PASS "$spent" "$note")")
    else
        FAILED=1
        SUMMARY+=("$(printf '%-34s %-6s %5ss  exit %s: %s' "$name" FAIL "$spent" "$status" "$note")")
    fi
    return $status
}

if [ "${HWNAS_GPU_CHECK_NO_INSTALL:-0}" != "1" ]; then
    step install 300 "$PY" -m pip install -q -e '.[tensorrt]'
    if ! "$PY" -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())" 2>/dev/null; then
        step install-onnxruntime-gpu 300 bash -c "'$PY' -m pip uninstall -y -q onnxruntime; '$PY' -m pip install -q onnxruntime-gpu"
    fi
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0), 'torch', torch.__version__)"

# the four profiles at 224, each validated on 10 archs
for runtime in torch onnxruntime tensorrt tensorrt-fp16 tensorrt-int8; do
    flags=(--runtime "${runtime%-*}")
    [ "$runtime" = tensorrt-fp16 ] && flags+=(--fp16)
    [ "$runtime" = tensorrt-int8 ] && flags+=(--precision int8)
    table="$OUT/proxyless224-$runtime.json"
    if step "profile $runtime" 150 "${HWNAS[@]}" profile --space proxyless --resolution 224 --device cuda "${flags[@]}" \
            "${QUICK[@]}" --force -o "$table"; then
        step "validate $runtime" 90 "${HWNAS[@]}" tables validate "$table" --n 10 "${QUICK[@]}"
    fi
done

step "onnxruntime TensorRT provider" 120 "$PY" - <<'EOF'
from hwnas.arch import Arch
from hwnas.latency.protocol import Protocol
from hwnas.latency.runtimes import get_runtime
from hwnas.spaces import get_space

space = get_space("proxyless", resolution=224)
runtime = get_runtime("onnxruntime", device="cuda", provider="tensorrt",
                      protocol=Protocol(warmup_runs=10, warmup_s=0.0, min_runs=20, min_s=0.0, rounds=1))
runners = [runtime.prepare_module(Arch.random(space, seed).build(), (1, *space.input_shape)) for seed in range(3)]
print("ms:", ", ".join(f"{timing.median_ms:.3f}" for timing in runtime.measure(runners)))
EOF

# a short search on the GPU (its own table, at the digits' shape), then its child through TensorRT
small="$OUT/proxyless32-torch.json"
if step "profile torch 32 (search table)" 90 "${HWNAS[@]}" profile --space proxyless --resolution 32 --in-channels 1 \
        --num-classes 10 --device cuda --runtime torch "${QUICK[@]}" --force -o "$small"; then
    budget=$("$PY" -c "
from hwnas.latency import LatencyModel, LatencyTable
from hwnas.spaces import get_space
model = LatencyModel(LatencyTable.load('$small'), get_space('proxyless', resolution=32, in_channels=1, num_classes=10))
fast, slow = model.fastest()[1], model.slowest()[1]
print(fast + 0.5 * (slow - fast))")
    search=("${HWNAS[@]}" search --method dsnas --latency "${budget}ms" --table "$small" --device cuda --runtime torch
            --epochs 2 --steps-per-epoch 10 --batch-size 64 --warmup-epochs 0 --quiet --json --force)
    if step "search --device cuda" 120 "${search[@]}" --out "$OUT/search"; then
        step "export tensorrt (verdict)" 180 bash -c "'$PY' -m hwnas export '$OUT/child.onnx' --run '$OUT/search' \
            --runtime tensorrt --device cuda --allow-foreign-table --force; code=\$?; [ \$code -le 1 ] && echo \"verdict exit \$code (0 PASS, 1 FAIL)\"; [ \$code -le 1 ]"
    fi
    if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
        step "torchrun 2-GPU search (NCCL)" 150 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
            -m hwnas search "${search[@]:3}" --out "$OUT/search-2gpu"
    else
        SUMMARY+=("$(printf '%-34s %-6s %5s   %s' "torchrun 2-GPU search (NCCL)" SKIP - "one GPU only")")
    fi
fi
step "pytest tests/test_latency_gpu.py" 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_latency_gpu.py

echo
echo "gpu_check summary ($OUT)"
printf '%-34s %-6s %6s  %s\n' step result time "last line of its log"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED

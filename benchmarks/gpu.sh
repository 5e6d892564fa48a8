#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md, in parts, on a machine with an NVIDIA GPU, torch, torchvision,
# tensorboard, pytest (+ pytest-xdist, hypothesis, expecttest) and the four Fashion-MNIST (or MNIST) IDX files:
#
#     DATA=/path/to/idx RESULTS=gpu-results bash benchmarks/gpu.sh env kernels tests cuda speed train bench slow
#
# A first GPU session runs `kernels` first: the Triton kernels have only been run in Triton's interpreter, and they
# run by default in the fast tier's CUDA backward passes.
#
# Each part appends to $RESULTS/<part>.log; a part that fails or times out does not stop the next. With ARCHIVE
# set, $RESULTS is packed into that .tar.gz after every part, so that what was measured survives a cut-off.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
RESULTS=${RESULTS:-gpu-results}
PYTHON=${PYTHON:-python3}
WORKERS=${WORKERS:-12}
DEVICE=${DEVICE:-cuda}  # cpu only to try this script out
mkdir -p "$RESULTS"
export RESULTS PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1

part() {  # part NAME SECONDS COMMAND...: run it with a time limit, logging to $RESULTS/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $* (limit ${limit}s) $(date -u +%T)" | tee -a "$RESULTS/$name.log"
    local started=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" bash -c '"$@"' _ "$@" >>"$RESULTS/$name.log" 2>&1
    local code=$?
    echo "=== $name: exit $code after $((SECONDS - started)) s" | tee -a "$RESULTS/$name.log"
    if [ -n "${ARCHIVE:-}" ]; then tar -czf "$ARCHIVE" -C "$RESULTS" .; fi
}

utilisation() {  # utilisation NAME COMMAND...: the command, with nvidia-smi sampling the GPU every 100 ms
    local name=$1
    shift
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 100 >"$RESULTS/$name.smi" &
    local sampler=$!
    "$@"
    local code=$?
    kill $sampler 2>/dev/null
    wait $sampler 2>/dev/null
    awk -F', ' '{u += $1; if ($2 > m) m = $2; n++} END {if (n) printf "GPU utilisation: mean %.0f%% over %d samples, memory used up to %d MiB\n", u / n, n, m}' "$RESULTS/$name.smi"
    return $code
}
export -f utilisation

for what in "$@"; do
    case $what in
    env)
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$RESULTS/env.log"
        $PYTHON -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())" | tee -a "$RESULTS/env.log"
        ;;
    tests)  # the default set, CUDA included, then the GPU trainer tests on their own
        # TESTS="-k cuda" runs only what CUDA adds; -v names each result as it comes, should the part be cut off
        part tests "${TESTS_LIMIT:-300}" $PYTHON -m pytest -v -p no:cacheprovider -n "$WORKERS" -rfEs --tb=short \
            --durations=15 --junitxml="$RESULTS/tests.xml" ${TESTS:-}
        ;;
    kernels)  # the kernels compiled for the GPU against the reference, then timed against the torch-op path
        part kernels 150 $PYTHON -m pytest -q -p no:cacheprovider -rfEs --tb=short tests/library/test_kernels.py \
            tests/library/test_fast_batch_norm.py tests/library/test_mlp_loss.py
        part kernels 150 $PYTHON benchmarks/kernels.py --device "$DEVICE" --rounds "${ROUNDS:-5}"
        ;;
    cuda)
        part cuda 100 $PYTHON -m pytest -q -p no:cacheprovider -rs tests/trainer/test_cuda.py
        ;;
    slow)
        part slow 420 $PYTHON -m pytest -q -p no:cacheprovider -n "$WORKERS" -m slow -rs --junitxml="$RESULTS/slow.xml"
        ;;
    speed)  # 784-512-10 × 40 epochs at batch 1024, every mode, manualbp and torch.nn
        part speed 180 $PYTHON benchmarks/speedrun.py --data-dir "$DATA" --device "$DEVICE" ${TARGET:+--target $TARGET}
        ;;
    train)  # each way of running side by side (3 epochs, no pictures), then train.py's defaults (15 epochs, pictures)
        runs=${RUNS:-$(mktemp -d)}
        # CUDA graphs are the default on a GPU: the eager runs say --no-cuda-graphs
        for variant in "manual --no-cuda-graphs" "torch --no-cuda-graphs" "manual --cuda-graphs" "torch --cuda-graphs" \
            "manual --compile" "torch --compile"; do
            set -- $variant
            name=$(echo "$variant" | tr -d ' -')
            part train 120 utilisation "train-$name" $PYTHON train.py --device "$DEVICE" --data-dir "$DATA" --no-progress \
                --no-pictures --epochs 3 --layers "$@" --logdir "$runs" --run-name "$name"
        done
        part train 200 utilisation train-default $PYTHON train.py --device "$DEVICE" --data-dir "$DATA" --no-progress \
            --logdir "$runs" --run-name default
        tar -czf "$RESULTS/runs.tar.gz" -C "$runs" default
        if [ -n "${ARCHIVE:-}" ]; then tar -czf "$ARCHIVE" -C "$RESULTS" .; fi
        ;;
    bench)
        part bench 150 $PYTHON benchmarks/layers.py --device "$DEVICE" --rounds "${ROUNDS:-3}"
        part bench 100 $PYTHON benchmarks/step.py --device "$DEVICE" --rounds "${ROUNDS:-5}"
        part bench 60 $PYTHON benchmarks/memory.py --device "$DEVICE"
        ;;
    epoch)
        part epoch 150 $PYTHON benchmarks/epoch.py --device "$DEVICE" --data-dir "$DATA" --rounds 2
        ;;
    *) echo "unknown part: $what" >&2 ;;
    esac
done

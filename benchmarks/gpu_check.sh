#!/usr/bin/env bash
# One command to check this project on an NVIDIA GPU machine, every log and output under OUT_DIR:
#
#     bash benchmarks/gpu_check.sh OUT_DIR          # GPU: tensorflow[and-cuda], 64x64 benchmark at batch 64 and 256
#     bash benchmarks/gpu_check.sh --cpu OUT_DIR    # the same steps with the CPU package and short settings
#
# Steps: a fresh venv in OUT_DIR/venv with TensorFlow (the version range of requirements.txt) and
# requirements-dev.txt (the requirements, pytest, matplotlib); nvidia-smi and TensorFlow's GPU list (stops here if TensorFlow sees no GPU); the test suite; the
# benchmark tables (benchmarks/bench_train.py) for fp32, bf16 and fp16 without and with XLA, into
# OUT_DIR/bench_batchN.md; a `python dcgan.py` run (2 minutes; --cpu 30 s) stopped by Ctrl-C (SIGINT, which saves
# a checkpoint), then `python sample.py` on it. A failing step is reported and the next one runs; the summary at
# the end gives each step's result, time and log, and the exit status is non-zero if any failed. Fashion-MNIST
# comes from Debian's dataset-fashion-mnist (installed if missing and apt-get is usable), else the scripts
# download it.
set -euo pipefail

usage() { echo "usage: bash benchmarks/gpu_check.sh [--cpu] OUT_DIR" >&2; exit 2; }
CPU=0
OUT=""
for arg in "$@"; do
    case "$arg" in
        --cpu) CPU=1 ;;
        -h|--help) usage ;;
        -*) echo "unknown option $arg" >&2; usage ;;
        *) [[ -z "$OUT" ]] || usage; OUT="$arg" ;;
    esac
done
[[ -n "$OUT" ]] || usage

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
START=$SECONDS

if [[ $CPU == 1 ]]; then
    TF_PACKAGE="tensorflow"
    BENCH_FLAGS=(--steps 5 --warmup 2 --image_size 32 --matmul_size 2048 --ceiling_seconds 0.6)
    # TF's fp16 convolution gradients on a CPU fall back to slow generic code (~30 s per DCGAN step at batch 64):
    # fp16 without XLA is timed for DCGAN alone, over one step.
    BENCH_RUNS=("--precisions fp32 bf16 --xla both" "--precisions fp16 --xla on"
                "--precisions fp16 --xla off --variants dcgan --steps 1 --warmup 1")
    BATCHES=(64)
    RUN_SECONDS=30
    RUN_FLAGS=(--sample_every 100 --log_every 20)
else
    TF_PACKAGE="tensorflow[and-cuda]"
    BENCH_FLAGS=(--steps 30 --warmup 3 --image_size 64)
    BENCH_RUNS=("--precisions fp32 bf16 fp16 --xla both")
    BATCHES=(64 256)
    RUN_SECONDS=120
    RUN_FLAGS=(--sample_every 500 --log_every 100)
fi

declare -a SUMMARY=()
FAILED=0
# step NAME LOG COMMAND...: run COMMAND, its output shown and kept in LOG, and note PASS or FAIL with the time.
step() {
    local name="$1" log="$2" t0=$SECONDS status=0
    shift 2
    echo
    echo "=== $name (log: $log)"
    "$@" 2>&1 | tee "$log" || status=$?
    if [[ $status == 0 ]]; then
        SUMMARY+=("PASS  $name ($((SECONDS - t0)) s)  $log")
    else
        SUMMARY+=("FAIL  $name (exit $status, $((SECONDS - t0)) s)  $log")
        FAILED=1
    fi
}
summary() {
    echo
    echo "=== summary ($((SECONDS - START)) s in all; everything is under $OUT)"
    printf '%s\n' "${SUMMARY[@]}"
}

# --- the dataset: Debian's package when it is missing (online, the scripts can also download it)
if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO="sudo"
    if command -v apt-get >/dev/null && { [[ -z $SUDO ]] || command -v sudo >/dev/null; }; then
        step "install dataset-fashion-mnist" "$OUT/apt.log" \
            bash -c "$SUDO apt-get update && $SUDO apt-get install -y dataset-fashion-mnist"
    else
        echo "note: /usr/share/datasets/fashion-mnist is missing and apt-get is unusable; the scripts will download"
    fi
fi

# --- a fresh venv with TensorFlow in requirements.txt's version range
TF_RANGE="$(sed -n 's/^tensorflow\([<>=!~][^ #]*\).*/\1/p' "$REPO/requirements.txt")"
[[ -n "$TF_RANGE" ]] || { echo "error: no tensorflow line in $REPO/requirements.txt" >&2; exit 1; }
rm -rf "$OUT/venv"
step "venv + pip install $TF_PACKAGE$TF_RANGE" "$OUT/install.log" bash -c "python3 -m venv '$OUT/venv' &&
    '$OUT/venv/bin/python' -m pip install '$TF_PACKAGE$TF_RANGE' -r '$REPO/requirements-dev.txt'"
if [[ $FAILED == 1 ]]; then summary; exit 1; fi
PY="$OUT/venv/bin/python"
cd "$REPO"

# --- the devices
if [[ $CPU == 1 ]]; then
    SUMMARY+=("SKIP  nvidia-smi (--cpu)")
else
    step "nvidia-smi" "$OUT/nvidia-smi.log" nvidia-smi
fi
step "TensorFlow's devices" "$OUT/devices.log" "$PY" -c "
import sys
import tensorflow as tf
print('tensorflow', tf.__version__, 'built with CUDA:', tf.test.is_built_with_cuda())
gpus = tf.config.list_physical_devices('GPU')
for gpu in gpus:
    print(gpu.name, tf.config.experimental.get_device_details(gpu))
print('devices:', [d.name for d in tf.config.list_logical_devices()])
if not gpus and $CPU == 0:
    sys.exit('error: TensorFlow sees no GPU (see nvidia-smi.log and the CUDA messages above); stopping.')
"
if [[ $FAILED == 1 ]]; then summary; exit 1; fi

# --- the test suite, the benchmark table, a short training run and sample.py on it
# Allow growth: the tests start training scripts as subprocesses while pytest's own TensorFlow holds the GPU.
step "test suite" "$OUT/pytest.log" env TF_FORCE_GPU_ALLOW_GROWTH=true "$PY" -m pytest -q
for batch in "${BATCHES[@]}"; do
    rm -f "$OUT/bench_batch$batch.md"
    for i in "${!BENCH_RUNS[@]}"; do
        # The tables (stdout) are appended to bench_batchN.md, the progress lines (stderr) go to the log.
        step "benchmark, batch $batch, ${BENCH_RUNS[$i]}" "$OUT/bench_batch${batch}_$i.log" \
            bash -c "'$PY' benchmarks/bench_train.py ${BENCH_FLAGS[*]} ${BENCH_RUNS[$i]} --batch_size $batch \
                     >> '$OUT/bench_batch$batch.md'"
    done
    cat "$OUT/bench_batch$batch.md"
done
step "benchmark, WGAN-GP ResNet, fp32 and bf16" "$OUT/bench_resnet.log" bash -c "'$PY' benchmarks/bench_train.py \
    ${BENCH_FLAGS[*]} --variants wgan_gp --precisions fp32 bf16 --xla off --arch resnet --image_size 32 --channels 3 \
    --width 128 --z_dim 128 --norm none > '$OUT/bench_resnet.md' && cat '$OUT/bench_resnet.md'"
rm -rf "$OUT/run"
# SIGINT after RUN_SECONDS: the script stops after the current step and saves a checkpoint (exit status 0);
# --preserve-status reports the script's own status, and -k kills it if it hangs 60 s longer.
step "dcgan.py for $RUN_SECONDS s" "$OUT/dcgan.log" \
    timeout --preserve-status -k 60 -s INT "$RUN_SECONDS" "$PY" dcgan.py --out_dir "$OUT/run" "${RUN_FLAGS[@]}"
step "sample.py on that run" "$OUT/sample.log" "$PY" sample.py "$OUT/run"

summary
echo "benchmark tables: $(ls "$OUT"/bench_batch*.md 2>/dev/null | tr '\n' ' ')"
echo "run directory: $OUT/run (samples in $OUT/run/samples)"
exit $FAILED

#!/usr/bin/env bash
# One command to check this project on an NVIDIA GPU machine, within a time budget, every log under OUT_DIR:
#
#     bash benchmarks/gpu_check.sh OUT_DIR               # GPU: tensorflow[and-cuda], 64x64 at batch 64 and 256
#     bash benchmarks/gpu_check.sh --budget 30 OUT_DIR   # a total budget of 30 minutes (default 15)
#     bash benchmarks/gpu_check.sh --cpu OUT_DIR         # the same steps with the CPU package and short settings
#
# Needs python3 with pip, and the internet or a package mirror; no sudo, no Debian package, no python3-venv.
# Steps, each with its share of the budget (a step may also use what earlier steps left unused, and is stopped at
# its deadline): a fresh venv in OUT_DIR/venv (`python3 -m venv`, else `virtualenv` installed by pip) with
# TensorFlow in requirements.txt's version range and requirements-dev.txt; nvidia-smi and TensorFlow's GPU list
# (stops here if TensorFlow sees no GPU); the test suite on the CPU (CUDA_VISIBLE_DEVICES= : the tests that
# compare two processes' pixels need the same device in both); the real FID Inception graph, downloaded over https
# into OUT_DIR/cache and loaded through inception.py's check (the tests use small graphs built offline); a GPU
# smoke test (one train step of each variant in fp32, bf16 and fp16, every loss and weight finite); the benchmark
# tables (benchmarks/bench_train.py; fp32, bf16, fp16 without and with XLA, into OUT_DIR/bench_batchN.md) and the
# folder pipeline on a generated 20,000-image RGB folder at 64x64 (--cpu: 5,000; OUT_DIR/bench_folder.md); a
# `python dcgan.py` run stopped by Ctrl-C (SIGINT, which saves a checkpoint), then `python sample.py` on it. A
# failing step is reported and the next one runs; the summary gives each step's result, its time against its share,
# and its log; the exit status is non-zero if any step failed.
#
# LD_LIBRARY_PATH is cleared, so TensorFlow loads the CUDA libraries of its own nvidia-* wheels, not a system
# CUDA of another version. The benchmarks' $GAN_CACHE is OUT_DIR/cache: the generated folder and its decoded-image
# cache are made there once (Fashion-MNIST, resized once per benchmark process, is kept for every row).
# Fashion-MNIST comes from Debian's dataset-fashion-mnist if installed, else the scripts download it (Keras).
set -euo pipefail

usage() {
    echo "usage: bash benchmarks/gpu_check.sh [--cpu] [--budget MINUTES] [--virtualenv] OUT_DIR" >&2
    exit 2
}
CPU=0
BUDGET=15
FORCE_VIRTUALENV=0
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpu) CPU=1 ;;
        --budget)
            [[ $# -ge 2 && $2 =~ ^[0-9]+$ && $2 -ge 1 ]] || { echo "--budget wants whole minutes >= 1" >&2; usage; }
            BUDGET=$2
            shift ;;
        --virtualenv) FORCE_VIRTUALENV=1 ;;  # skip `python3 -m venv` (how the fallback is tested)
        -h|--help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) [[ -z "$OUT" ]] || usage; OUT="$1" ;;
    esac
    shift
done
[[ -n "$OUT" ]] || usage

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
unset LD_LIBRARY_PATH
START=$SECONDS
BUDGET_S=$((BUDGET * 60))

if [[ $CPU == 1 ]]; then
    TF_PACKAGE="tensorflow"
    BENCH_FLAGS=(--steps 5 --warmup 2 --image_size 32 --matmul_size 2048 --ceiling_seconds 0.6)
    # TF's fp16 convolution gradients on a CPU fall back to slow generic code (~30 s per DCGAN step at batch 64):
    # fp16 without XLA is timed for DCGAN alone, over one step.
    BENCH_RUNS=("--precisions fp32 bf16 --xla both" "--precisions fp16 --xla on"
                "--precisions fp16 --xla off --variants dcgan --steps 1 --warmup 1")
    BENCH_ROWS=(10 3 1)  # rows each run times (WGAN's warm-up row included), to split the step's share over them
    BATCHES=(64)
    FOLDER_IMAGES=5000 FOLDER_ROWS=3  # the folder run counts as this many rows when the share is split
    SMOKE_FLAGS="'--image_size', '16', '--batch_size', '8', '--width', '8', '--z_dim', '8'"
    # The authors' ResNet (width 128, batch 64) takes about a minute per step here: --cpu times a narrow one, to
    # check that the row runs.
    RESNET_FLAGS=(--width 32 --batch_size 16 --steps 1 --warmup 1)
    RUN_FLAGS=(--sample_every 100 --log_every 20)
else
    TF_PACKAGE="tensorflow[and-cuda]"
    BENCH_FLAGS=(--steps 30 --warmup 3 --image_size 64)
    BENCH_RUNS=("--precisions fp32 bf16 fp16 --xla both")
    BENCH_ROWS=(20)
    BATCHES=(64 256)
    FOLDER_IMAGES=20000 FOLDER_ROWS=8
    SMOKE_FLAGS="'--image_size', '64', '--batch_size', '64'"
    RESNET_FLAGS=(--width 128 --batch_size 64 --gen_batch_multiple 2)  # the authors' CIFAR-10 settings
    RUN_FLAGS=(--sample_every 500 --log_every 100)
fi
FOLDER_FLAGS=(--folder_images "$FOLDER_IMAGES" --image_size 64 --batch_size 64 --variants dcgan --precisions fp32
              --xla off --steps 3 --warmup 1 --pipeline_seconds 5)
# Shares of the budget, in percent: the venv, the devices, the tests, the Inception graph, the smoke test, the
# benchmarks (all rows of all batch sizes, and the folder), the training run, sample.py.
SHARE_INSTALL=30 SHARE_DEVICES=2 SHARE_TESTS=30 SHARE_INCEPTION=3 SHARE_SMOKE=7 SHARE_BENCH=18 SHARE_RUN=7
SHARE_SAMPLE=3

declare -a SUMMARY=()
FAILED=0
PLANNED=0  # seconds of the budget planned for the steps so far
LIMIT=0
# plan SECONDS: set LIMIT to the seconds the next step may take: SECONDS, plus what earlier steps left unused (or
# minus what they overran), at least 10. share PERCENT: plan that part of the budget.
plan() {
    PLANNED=$((PLANNED + $1))
    LIMIT=$((PLANNED - (SECONDS - START)))
    LIMIT=$((LIMIT > 10 ? LIMIT : 10))
}
share() { plan $((BUDGET_S * $1 / 100)); }
# step NAME LOG SECONDS COMMAND...: run COMMAND for at most SECONDS, its output shown and kept in LOG; note PASS or
# FAIL with its time.
step() {
    local name="$1" log="$2" limit="$3" t0=$SECONDS status=0
    shift 3
    echo
    echo "=== $name (at most $limit s; log: $log)"
    timeout -k 30 "$limit" "$@" 2>&1 | tee "$log" || status=$?
    local took=$((SECONDS - t0))
    if [[ $status == 0 ]]; then
        SUMMARY+=("PASS  $name ($took s of $limit s)  $log")
    elif [[ $status == 124 || $status == 137 ]]; then
        SUMMARY+=("FAIL  $name (stopped at its $limit s deadline)  $log")
        FAILED=1
    else
        SUMMARY+=("FAIL  $name (exit $status, $took s of $limit s)  $log")
        FAILED=1
    fi
    echo
    echo "--- $name: $took s"
}
summary() {
    echo
    echo "=== summary ($((SECONDS - START)) s of the $BUDGET_S s budget; everything is under $OUT)"
    printf '%s\n' "${SUMMARY[@]}"
}

[[ -d /usr/share/datasets/fashion-mnist ]] ||
    echo "note: no /usr/share/datasets/fashion-mnist: the scripts download Fashion-MNIST (Keras) on first use"

# --- a fresh venv with TensorFlow in requirements.txt's version range
TF_RANGE="$(sed -n 's/^tensorflow\([<>=!~][^ #]*\).*/\1/p' "$REPO/requirements.txt")"
[[ -n "$TF_RANGE" ]] || { echo "error: no tensorflow line in $REPO/requirements.txt" >&2; exit 1; }
make_venv() {
    if [[ $FORCE_VIRTUALENV == 0 ]] && python3 -m venv "$OUT/venv"; then
        :
    else
        # Debian/Ubuntu ship venv without ensurepip unless python3-venv is installed (root only): virtualenv,
        # installed by pip into OUT_DIR (--target: not into the system's Python, which PEP 668 may forbid).
        echo "using virtualenv from pip instead of python3 -m venv"
        rm -rf "$OUT/venv" "$OUT/virtualenv"
        python3 -m pip install --quiet --target "$OUT/virtualenv" virtualenv
        PYTHONPATH="$OUT/virtualenv" python3 -m virtualenv --quiet "$OUT/venv"
    fi
    "$OUT/venv/bin/python" -m pip install "$TF_PACKAGE$TF_RANGE" -r "$REPO/requirements-dev.txt"
}
export OUT FORCE_VIRTUALENV TF_PACKAGE TF_RANGE REPO
export -f make_venv
rm -rf "$OUT/venv"
share $SHARE_INSTALL
# Nothing runs without it, so the install may take up to half the budget (the later steps then get less).
step "venv + pip install $TF_PACKAGE$TF_RANGE" "$OUT/install.log" $((BUDGET_S / 2)) bash -c make_venv
if [[ $FAILED == 1 ]]; then summary; exit 1; fi
PY="$OUT/venv/bin/python"
cd "$REPO"

# --- the devices
share $SHARE_DEVICES
if [[ $CPU == 1 ]]; then
    SUMMARY+=("SKIP  nvidia-smi (--cpu)")
else
    step "nvidia-smi" "$OUT/nvidia-smi.log" "$LIMIT" nvidia-smi
    plan 0
fi
step "TensorFlow's devices" "$OUT/devices.log" "$LIMIT" "$PY" -c "
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

# --- the test suite, on the CPU
share $SHARE_TESTS
step "test suite (CPU)" "$OUT/pytest.log" "$LIMIT" env CUDA_VISIBLE_DEVICES= "$PY" -m pytest -q

# --- the real FID Inception graph through inception.py's check (downloaded once into OUT_DIR/cache): a check that
# refused the real graph would show here, where the graph can be had
share $SHARE_INCEPTION
step "FID Inception graph: download over https, check, load" "$OUT/inception.log" "$LIMIT" \
    env GAN_CACHE="$OUT/cache" "$PY" -c "
import numpy as np
import common, inception, metrics
def main():
    features, graph_id = inception.inception_network(metrics.default_cache_dir())
    pool3, logits = features(np.zeros((2, 64, 64, 3), np.uint8))
    if pool3.shape != (2, 2048) or logits.shape != (2, 1008):
        raise common.RunError(f'the graph gives pool_3 {pool3.shape} and logits {logits.shape}, not (2, 2048) and '
                              '(2, 1008).')
    print('the FID Inception graph passed the check: graph id', graph_id, 'pool_3', pool3.shape, 'logits',
          logits.shape)
common.cli(main)
"

# --- one train step of each variant at each precision on the GPU (--cpu: on the CPU, small)
share $SHARE_SMOKE
step "smoke test: one step of each variant in fp32, bf16, fp16" "$OUT/smoke.log" "$LIMIT" "$PY" -c "
import math, sys, time
sys.path.insert(0, 'benchmarks')
import numpy as np
import tensorflow as tf
import bench_train
if $CPU == 0 and not tf.config.list_logical_devices('GPU'):
    sys.exit('error: TensorFlow sees no GPU')
failed = 0
for precision in ('fp32', 'bf16', 'fp16'):
    for variant in ('dcgan', 'wgan', 'wgan_gp'):
        start = time.perf_counter()
        args, generator, critic, iterator, train_step, _ = bench_train.build(
            variant, ['--strategy', 'one', '--precision', precision, $SMOKE_FLAGS])
        metrics = {k: float(v) for k, v in train_step(iterator, tf.constant(1)).items()}
        finite = all(math.isfinite(v) for v in metrics.values()) and all(
            np.isfinite(w.numpy()).all() for w in generator.weights + critic.weights)
        failed += not finite
        status = 'finite' if finite else 'NOT FINITE'
        print(f'{variant:8s} {precision}: {status} on', generator.weights[0].value.device,
              f'in {time.perf_counter() - start:.1f} s;',
              ', '.join(f'{k} {v:.4g}' for k, v in sorted(metrics.items())), flush=True)
sys.exit(f'error: {failed} of 9 steps gave non-finite values' if failed else 0)
"

# --- the benchmark tables, and the folder pipeline
BENCH_S=$((BUDGET_S * SHARE_BENCH / 100))  # handed out run by run, in proportion to the rows each times
FIXED_ROWS=12  # the fixed-cost tables: 3 variants x XLA off/on, negligible and real network
STEPS_PER_CALL=$("$PY" -c "import common; print(common.STEPS_PER_CALL)")
ROWS=$((FOLDER_ROWS + 2 + FIXED_ROWS))  # + the ResNet's two rows
for batch in "${BATCHES[@]}"; do for rows in "${BENCH_ROWS[@]}"; do ROWS=$((ROWS + rows)); done; done
for batch in "${BATCHES[@]}"; do
    rm -f "$OUT/bench_batch$batch.md"
    for i in "${!BENCH_RUNS[@]}"; do
        plan $((BENCH_S * BENCH_ROWS[i] / ROWS))
        # A row's warm-up and its timed steps may each take row_seconds; a third is left for start-up, tracing,
        # the ceilings and the pipeline.
        row_seconds=$(( LIMIT / (3 * BENCH_ROWS[i]) > 1 ? LIMIT / (3 * BENCH_ROWS[i]) : 1 ))
        # The tables (stdout) are appended to bench_batchN.md, the progress lines (stderr) go to the log.
        step "benchmark, batch $batch, ${BENCH_RUNS[$i]}" "$OUT/bench_batch${batch}_$i.log" "$LIMIT" \
            env GAN_CACHE="$OUT/cache" bash -c "'$PY' benchmarks/bench_train.py ${BENCH_FLAGS[*]} ${BENCH_RUNS[$i]} \
                     --batch_size $batch --row_seconds $row_seconds >> '$OUT/bench_batch$batch.md'"
    done
    cat "$OUT/bench_batch$batch.md"
done
RESNET_ROWS=2  # fp32 and bf16
plan $((BENCH_S * RESNET_ROWS / ROWS))
row_seconds=$(( LIMIT / (3 * RESNET_ROWS) > 1 ? LIMIT / (3 * RESNET_ROWS) : 1 ))
step "benchmark, WGAN-GP ResNet, fp32 and bf16" "$OUT/bench_resnet.log" "$LIMIT" bash -c "'$PY' \
    benchmarks/bench_train.py ${BENCH_FLAGS[*]} --variants wgan_gp --precisions fp32 bf16 --xla off --arch resnet \
    --image_size 32 --channels 3 --z_dim 128 --norm none ${RESNET_FLAGS[*]} --row_seconds $row_seconds \
    > '$OUT/bench_resnet.md' && cat '$OUT/bench_resnet.md'"
plan $((BENCH_S * FIXED_ROWS / ROWS))
# The fixed cost of a step (negligible network) and the real network's, one call per step against
# --steps_per_call's default, XLA off and on: the last lines say which to use on this GPU.
step "fixed cost of a step, K = 1 against the default, XLA off and on" "$OUT/bench_fixed.log" "$LIMIT" bash -c \
    "'$PY' benchmarks/bench_train.py --fixed_cost --steps 200 --per_call $STEPS_PER_CALL > '$OUT/bench_fixed.md' && \
     '$PY' benchmarks/bench_train.py --fixed_cost --steps 50 --per_call $STEPS_PER_CALL --width 64 --batch_size 128 \
         --z_dim 100 >> '$OUT/bench_fixed.md' && cat '$OUT/bench_fixed.md'"
plan $((BENCH_S * FOLDER_ROWS / ROWS))
step "folder pipeline: $FOLDER_IMAGES generated RGB JPEGs at 64x64" "$OUT/bench_folder.log" "$LIMIT" \
    env GAN_CACHE="$OUT/cache" bash -c "'$PY' benchmarks/bench_train.py ${FOLDER_FLAGS[*]} > '$OUT/bench_folder.md'"
cat "$OUT/bench_folder.md"

# --- a short training run stopped by SIGINT, and sample.py on it
rm -rf "$OUT/run"
share $SHARE_RUN
# 30 s of the step's time for start-up and the final checkpoint; at least 30 s of training (a SIGINT before the
# script has started, on a busy machine, would leave no checkpoint for sample.py)
RUN_SECONDS=$((LIMIT - 30 > 30 ? LIMIT - 30 : 30))
# SIGINT after RUN_SECONDS: the script stops after the current step and saves a checkpoint (exit status 0);
# --preserve-status reports the script's own status, and -k kills it if it hangs 30 s longer.
step "dcgan.py for $RUN_SECONDS s" "$OUT/dcgan.log" $((LIMIT > RUN_SECONDS + 30 ? LIMIT : RUN_SECONDS + 30)) \
    timeout --preserve-status -k 30 -s INT "$RUN_SECONDS" "$PY" dcgan.py --out_dir "$OUT/run" "${RUN_FLAGS[@]}"
share $SHARE_SAMPLE
step "sample.py on that run" "$OUT/sample.log" "$LIMIT" "$PY" sample.py "$OUT/run"

summary
echo "benchmark tables: $(ls "$OUT"/bench_*.md 2>/dev/null | tr '\n' ' ')"
echo "run directory: $OUT/run (samples in $OUT/run/samples)"
exit $FAILED

"""Machinery shared by dcgan.py, wgan.py and wgan_gp.py that has no algorithm in it.

Flags every script spells the same way and their validation, the tf.distribute strategy and mixed-precision
policy, run directories and config.json, seeding, the input pipeline fed to each replica, checkpoints (save,
restore, refuse a mismatch, never save a non-finite state), logging to the console, TensorBoard and
metrics.jsonl, the fixed-noise sample grid, and the training loop's bookkeeping (Ctrl-C, time budget, crash
saves). What differs between the variants (losses, constraint, optimizer, normalisation, the train step) stays
in the scripts.

A run directory looks like this:
    runs/<variant>-<dataset>-<YYYYmmdd-HHMMSS>/
        config.json            every flag, the variant, library versions, git commit
        ckpt/ckpt-<step>.*     the last --keep_ckpts checkpoints (tf.train.Checkpoint)
        ckpt_best/             with --eval_every: the best-scoring checkpoint
        samples/step_NNNNNN.png  an 8x8 grid from one fixed noise batch
        logs/                  TensorBoard event files
        metrics.jsonl          the logged scalars, one JSON object per line
Only the chief (the one process of a single-machine run) writes there; other workers of a multi-worker run write
their share of each checkpoint into a temporary directory that is removed at the end.
"""
import contextlib
import datetime
import glob
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

import data
import files
import ops

VARIANTS = ("dcgan", "wgan", "wgan_gp")
SAMPLE_GRID = 8  # the fixed-noise grid is SAMPLE_GRID x SAMPLE_GRID images
STRATEGIES = ("auto", "one", "mirrored", "multi_worker")
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}  # Keras dtype policies
EXIT_USER_ERROR, EXIT_NON_FINITE, EXIT_INTERRUPTED = 2, 3, 130  # 130: the shell's status for a SIGINT

# Flags a resumed run may change; every other saved flag is part of the experiment and must match.
RESUMABLE_FLAGS = {"steps", "resume", "out_dir", "data_dir", "ckpt_every", "sample_every", "log_every",
                   "keep_ckpts", "xla", "eval_every", "eval_samples", "eval_extra", "strategy", "minutes"}


class RunError(Exception):
    """A problem the user can fix; str(e) is one sentence saying what is wrong and what to do."""


class NonFiniteError(Exception):
    """Training produced NaN or Inf; str(e) names the step and the quantity."""


def cli(main):
    """Run main(); user errors end with one sentence on stderr and exit status 2, a non-finite value with exit
    status 3, a second Ctrl-C with status 130, not a traceback."""
    try:
        main()
    except (RunError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except NonFiniteError as e:
        print(f"error: {e} Nothing non-finite was saved; see docs/reliability.md for what to try.",
              file=sys.stderr)
        sys.exit(EXIT_NON_FINITE)
    except OSError as e:  # known causes in one sentence: a full disk, an unwritable or vanished output
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}; fix that and continue the run "
              "with --resume RUN_DIR.", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except tf.errors.ResourceExhaustedError:
        print("error: out of memory; lower --batch_size (or --image_size, --width), or use --precision bf16/fp16, "
              "and continue the run with --resume RUN_DIR.", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:  # a second Ctrl-C: the loop has saved what it could and said so
        print("error: interrupted; a training run continues from its newest checkpoint with --resume RUN_DIR.",
              file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


# ----------------------------------------------------------------------------------------------------- flags
def add_common_flags(parser, *, batch_size, steps, norm, first_bn, norms=ops.NORMS):
    """Flags that mean the same thing in all three scripts, spelled the same way."""
    add = parser.add_argument
    add("--dataset", default="fashion_mnist", choices=data.DATASETS, help="training images")
    add("--data_dir", default=None,
        help="where the dataset's files are (required for 'folder'); default: the usual place for each dataset")
    add("--image_size", type=int, default=32,
        help="images are resized (or padded: --fit) to image_size x image_size")
    add("--channels", type=int, default=1, choices=(1, 3), help="1 = grayscale, 3 = RGB (converted as needed)")
    add("--fit", default="resize", choices=data.FITS,
        help="how images reach --image_size: resize = bilinear resize; pad = the original pixels centred on a black "
             "canvas (Fashion-MNIST 28 -> 32: a 2-pixel border), for the built-in datasets only (a folder's images "
             "vary in size) and images no larger than --image_size. Default resize: the measurements in "
             "docs/dcgan_gap.md do not favour padding")
    add("--batch_size", type=int, default=batch_size, help="global batch size (split evenly across devices)")
    add("--steps", type=int, default=steps,
        help="total generator steps of the run (a resumed run stops at the same total); the default is this "
             "project's choice for Fashion-MNIST, the papers train CIFAR/LSUN for 100k-200k steps")
    add("--minutes", type=float, default=0,
        help="also stop (with a checkpoint) after this many minutes of training time, evaluation and saving "
             "excluded; 0 = no limit")
    add("--z_dim", type=int, default=100,
        help="size of the noise vector z ~ N(0, I) (the DCGAN paper drew U[-1, 1]; Gaussian as in most later code)")
    add("--width", type=int, default=64,
        help="channels of the critic's first / generator's last hidden layer; doubles with every halving")
    add("--norm", default=norm, choices=norms,
        help="normalisation in the critic's hidden layers (--arch no_norm: none whatever this says)")
    add("--arch", default="dcgan", choices=ops.ARCHS,
        help="networks (ops.py; docs/architectures.md): dcgan = DCGAN G and D; nobn_g = the WGAN paper's G without "
             "BatchNorm and with a constant filter count (the paper's, not its authors' --noBN code, which keeps "
             "the halving pyramid); mlp_g = G a 4-layer ReLU MLP of 512 units, tanh output; no_norm = no "
             "normalisation in G or D; tanh = tanh nonlinearities in G and D; resnet = WGAN-GP's CIFAR-10 ResNet "
             "(32x32 only; its critic's blocks take --norm, the authors' is none). The critic is DCGAN's for "
             "dcgan, nobn_g and mlp_g")
    add("--first_bn", default=first_bn, choices=ops.FIRST_BNS,
        help="the generator's first BatchNorm, on the projection of z (--arch dcgan, tanh): feature = statistics, "
             "gain and bias per unit of the projection, over the batch (Newmu/dcgan_code, the DCGAN paper's first "
             "author's; WGAN-GP's gan_cifar.py); channel = per channel, over the batch and the 4x4 positions "
             "(dcgan.torch, pytorch/examples, the WGAN authors' DCGAN_G). Runs saved before this flag are channel")
    add("--dequantize", action="store_true",
        help="spread each 8-bit pixel value uniformly over its quantisation bin, (v + U(0, 1)) / 128 - 1, as the "
             "WGAN-GP authors' CIFAR-10 code does; default v / 127.5 - 1")
    add("--seed", type=int, default=0, help="seeds weights, noise, data order (and --dequantize's noise)")
    add("--deterministic", action="store_true",
        help="enable TF op determinism so that runs repeat bit for bit (slower on GPUs)")
    add("--strategy", default="auto", choices=STRATEGIES,
        help="devices: auto = all local GPUs if there are two or more, else one device; mirrored = all local GPUs "
             "(or all logical CPU devices); multi_worker = several machines, configured by TF_CONFIG")
    add("--precision", default="fp32", choices=tuple(PRECISIONS),
        help="fp32; bf16 (mixed, for Ampere+ GPUs, TPUs and CPUs with AVX512_BF16/AMX); fp16 (mixed with loss "
             "scaling, for Volta/Turing GPUs)")
    add("--xla", action="store_true", help="compile each device's train step with XLA (jit_compile=True)")
    add("--out_dir", default=None, help="run directory (default: runs/<variant>-<dataset>-<timestamp>)")
    add("--resume", default=None, metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint (or from the start if it has none yet), "
             "with its saved flags")
    add("--ckpt_every", type=int, default=1000, help="save a checkpoint every N steps (and at the end, and on Ctrl-C)")
    add("--keep_ckpts", type=int, default=3, help="how many of the newest checkpoints to keep")
    add("--sample_every", type=int, default=500, help="write a sample grid from the fixed noise every N steps")
    add("--log_every", type=int, default=50, help="write losses to TensorBoard and metrics.jsonl every N steps")
    add("--eval_every", type=int, default=0,
        help="score the generator every N steps (0 = never) and keep the best checkpoint in ckpt_best/")
    add("--eval_samples", type=int, default=10000, help="generated images per evaluation")
    add("--lr_decay", default="none", choices=("none", "linear"),
        help="learning rate schedule of both networks: none, or linear to 0 over --steps generator steps "
             "(WGAN-GP's CIFAR-10 ResNet recipe)")
    # Lower-is-better metrics of metrics.py only (the Inception Score is higher-is-better, so it cannot pick a best).
    add("--metric", default=None, choices=("classifier_fd", "classifier_kid", "fid", "kid"),
        help="what --eval_every computes (see metrics.py); default classifier_fd for fashion_mnist/mnist, else fid")
    add("--eval_extra", nargs="*", default=[], metavar="METRIC",
        help="metrics.py metrics also logged at each --eval_every (never used to pick the best checkpoint), e.g. "
             "classifier_precision classifier_recall classes: mode collapse in numbers")


def parse_args(parser, variant, argv=None):
    """Parse and validate flags; with --resume, saved flags become the defaults and an explicit conflicting flag
    is refused. Nothing is written before this has passed."""
    args = parser.parse_args(argv)
    if args.resume is not None:
        saved = saved_flags(args.resume)
        if saved.get("variant") != variant:
            raise RunError(f"{args.resume} is a {saved.get('variant')} run; resume it with "
                           f"{saved.get('variant')}.py, not {variant}.py.")
        known = {a.dest for a in parser._actions}
        parser.set_defaults(**{k: v for k, v in saved.items() if k in known and k not in ("resume", "out_dir")})
        args = parser.parse_args(argv)
        for key in sorted(known - RESUMABLE_FLAGS - {"help"}):
            if key in saved and getattr(args, key) != saved[key]:
                raise RunError(f"--{key} {getattr(args, key)} conflicts with the saved run's {saved[key]}; "
                               f"drop the flag to resume {args.resume}, or start a new run.")
        if args.lr_decay == "linear" and args.steps != saved["steps"]:
            raise RunError(f"--steps {args.steps} would change the saved run's learning rate decay, which reaches "
                           f"0 at its --steps {saved['steps']}; drop --steps to resume {args.resume}.")
    problem = flag_problem(args)
    if problem:
        raise RunError(problem)
    return args


# Checked for every script that has the flag: (flags, test, what the value must be).
_FLAG_RULES = [
    (("steps", "batch_size", "ckpt_every", "sample_every", "log_every", "keep_ckpts", "width", "z_dim",
      "n_critic", "eval_samples", "gen_batch_multiple"), lambda v: v >= 1, "at least 1"),
    (("eval_every", "minutes"), lambda v: v >= 0, "0 (off) or positive"),
    (("lr", "clip"), lambda v: v > 0, "positive"),
    (("gp_weight",), lambda v: v >= 0, "0 or positive"),
    (("beta1", "beta2"), lambda v: 0 <= v < 1, "in [0, 1)"),
    (("seed",), lambda v: 0 <= v < 2 ** 31, "in [0, 2^31)"),
]


def flag_problem(args):
    """One sentence about the first invalid flag, or None."""
    for names, ok, what in _FLAG_RULES:
        for name in names:
            value = getattr(args, name, None)
            if value is not None and not (math.isfinite(value) and ok(value)):
                return f"--{name} must be {what}, not {value}."
    try:
        ops.check_arch(getattr(args, "arch", "dcgan"), args.image_size)
    except ValueError as e:
        return str(e)
    # --eval_samples against the metric's needs: metrics.Evaluator checks it, built before anything is written
    # (metrics imports this module, not the other way round).
    return None


# What a run saved before a flag existed ran with: its config.json has no such key.
BEFORE_FLAGS = {"arch": "dcgan", "lr_decay": "none", "dequantize": False, "gen_batch_multiple": 1, "fit": "resize",
                "first_bn": "channel"}


def saved_flags(run_dir):
    """read_config, with BEFORE_FLAGS filled in where the run predates a flag."""
    return {**BEFORE_FLAGS, **read_config(run_dir)}


def read_config(run_dir):
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir} is not a directory.")
    if not os.path.isfile(path):
        raise RunError(f"{run_dir} is not a run directory (it has no config.json).")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(f"{path} cannot be read as JSON ({e}).") from None
    if not isinstance(config, dict) or config.get("variant") not in VARIANTS:
        raise RunError(f"{path} is not the config of a dcgan/wgan/wgan_gp run.")
    missing = [k for k in ("image_size", "channels", "z_dim", "width", "seed", "dataset") if k not in config]
    if missing:
        raise RunError(f"{path} lacks {', '.join(missing)}; it was not written by these scripts or was edited.")
    return config


def _write_json(path, obj):
    files.write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def _now():
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


# ------------------------------------------------------------------------------------ devices and precision
_MIRRORED = {}  # devices -> the process's MirroredStrategy over them


def make_strategy(args):
    """The tf.distribute strategy named by --strategy. Call it first: a multi-worker strategy must be created
    before any other TensorFlow work, and the batch-size check needs the number of replicas in use."""
    name = args.strategy
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise RunError("--strategy multi_worker needs the TF_CONFIG environment variable that lists the "
                           "workers (see README, 'Many GPUs and machines').")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if name == "auto":
            name = "mirrored" if len(gpus) >= 2 else "one"
        if name == "one":
            strategy = tf.distribute.get_strategy()  # the default strategy: one device, no overhead
        else:  # all local GPUs; without GPUs, all logical CPU devices (how the tests run several devices)
            devices = tuple(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
            # One per process: a second MirroredStrategy over the same devices (main() called twice, as the tests
            # do) restarts the collectives' instance keys, and its all-reduces then collide with the first's.
            if devices not in _MIRRORED:
                _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices)
            strategy = _MIRRORED[devices]
    replicas = strategy.num_replicas_in_sync
    if args.batch_size % replicas:
        raise RunError(f"--batch_size {args.batch_size} does not split evenly over the {replicas} devices in use; "
                       f"use a multiple of {replicas}.")
    if args.xla and replicas > 1:
        # Synchronized BatchNorm all-reduces inside the per-device computation, and a collective cannot sit
        # inside a nested jit_compile function; XLA here compiles per-device work only.
        raise RunError(f"--xla compiles one device's train step and cannot include the BatchNorm statistics "
                       f"synchronized across the {replicas} devices in use; drop --xla or use --strategy one.")
    return strategy


def set_precision(precision):
    """Keras' global dtype policy, set before the networks are built. Mixed policies keep the variables in float32
    and compute in bfloat16/float16; the networks' outputs (ops.py), the losses, LayerNorm's statistics and the
    gradient penalty's norm stay in float32."""
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])


def prepare_optimizers(args, *pairs):
    """Wrap each optimizer for fp16 (dynamic loss scaling, so small gradients do not underflow) and create its
    slots for its model's variables now, so that a restore fills them. pairs: (optimizer, model), ..."""
    prepared = []
    for optimizer, model in pairs:
        if args.precision == "fp16":
            optimizer = LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        prepared.append(optimizer)
    return prepared


class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, made to skip an update on every replica and every worker alike.

    Keras 3 (3.15, loss_scale_optimizer.py) decides whether to skip from one replica's own gradients *before* the
    all-reduce, which in Keras 3 happens later, inside the inner optimizer's apply: under MirroredStrategy it takes
    the first replica's verdict for all, so an overflow on another replica is all-reduced into every copy of the
    weights (they become Inf); under MultiWorkerMirroredStrategy every worker decides alone, one enters the
    gradient all-reduce, the other does not, and the run hangs. Here the replicas first agree, with one scalar
    all-reduce: if any replica's gradients are non-finite, every replica's are made so (a NaN added to one
    gradient), and Keras' own logic then skips the update and halves the scale everywhere. Its variables and
    their checkpoint names are Keras' own.
    """

    def apply(self, grads, trainable_variables=None):
        context = tf.distribute.get_replica_context()  # None in a cross-replica context
        if context is not None and context.num_replicas_in_sync > 1:
            grads = list(grads)
            bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(self.check_finite(grads), tf.float32))
            i = next(i for i, g in enumerate(grads) if g is not None)
            grads[i] = grads[i] + tf.where(bad > 0, tf.constant(float("nan"), grads[i].dtype),
                                           tf.zeros([], grads[i].dtype))
        return super().apply(grads, trainable_variables)


def reduce_metrics(strategy, metrics):
    """Per-replica logged values -> their sums over all replicas and workers, in ONE all-reduce of one vector.

    The values are already divided by the global batch (tf.nn.compute_average_loss), so the sum is the global mean.
    A train step calls this once, after its last update: an all-reduce per value and per critic update would be
    about 400 collectives in a WGAN warm-up step, each a latency of its own between GPUs or machines, for numbers
    that are only read at log steps. One per step keeps the NaN guard exact and every worker's copy identical.
    """
    if strategy.num_replicas_in_sync == 1:
        return metrics
    names = list(metrics)
    stacked = strategy.run(lambda *values: tf.stack([tf.cast(v, tf.float32) for v in values]),
                           args=tuple(metrics[k] for k in names))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, stacked, axis=None)
    return {k: total[i] for i, k in enumerate(names)}


class LinearDecay:
    """--lr_decay linear: lr * max(0, 1 - step / steps), a Keras 3 callable learning rate read at every update.

    `step` is the run's clock, Progress.step (generator steps), bound when Progress is created (through
    decay_learning_rates); not optimizer.iterations, which n_critic makes 5x the generator's. The WGAN-GP authors decay both Adams by the
    generator iteration the same way (gan_cifar_resnet.py). The step is checkpointed, so a resumed run continues
    the decay bit for bit.
    """

    def __init__(self, lr, steps):
        self.lr, self.steps, self.step = lr, steps, None

    def __call__(self):
        if self.step is None:
            raise RuntimeError("LinearDecay has no step counter; call common.decay_learning_rates first")
        return self.lr * tf.maximum(0.0, 1.0 - tf.cast(self.step, tf.float32) / float(self.steps))


def learning_rate(args):
    """What the scripts pass their optimizers: --lr, or with --lr_decay linear a LinearDecay from it. (A callable
    given later through optimizer.learning_rate = ... would drop the learning rate variable from a list the
    checkpoint tracks, which TensorFlow refuses to save.)"""
    return LinearDecay(args.lr, args.steps) if args.lr_decay == "linear" else args.lr


def decay_learning_rates(step, *optimizers):
    """Bind the optimizers' LinearDecay learning rates (if any) to the run's step counter, Progress.step."""
    for optimizer in optimizers:
        rate = getattr(optimizer, "inner_optimizer", optimizer)._learning_rate  # fp16: the LossScaleOptimizer's
        if isinstance(rate, LinearDecay):
            rate.step = step


def loss_scale(optimizer):
    """The current fp16 loss scale of an optimizer (1.0 without loss scaling), as a float32 tensor."""
    scale = getattr(optimizer, "dynamic_scale", None)
    return tf.constant(1.0) if scale is None else tf.cast(scale, tf.float32)


def distribute_dataset(strategy, args, start_batch):
    """The training data as a distributed dataset: replica r of R reads slice r of each global batch, so the
    sequence of global batches is the same for any number of replicas (and a resume continues it exactly)."""
    def dataset_fn(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines  # replicas fed by this worker
        first = context.input_pipeline_id * local
        return data.make_dataset(args.dataset, args.data_dir, args.image_size, args.channels, args.batch_size,
                                 seed=args.seed, start_batch=start_batch, parts=context.num_replicas_in_sync,
                                 take=range(first, first + local), dequantize=getattr(args, "dequantize", False),
                                 fit=getattr(args, "fit", "resize"))
    return strategy.distribute_datasets_from_function(dataset_fn)


def fixed_noise(seed, z_dim, n=SAMPLE_GRID * SAMPLE_GRID):
    """The noise batch behind every sample grid of a run: a pure function of the seed, so resume keeps it, and the
    same z as generate_images(seed), so `sample.py RUN --seed <the run's seed>` redraws the run's own grid."""
    return noise(n, z_dim, seed)


def noise(n, z_dim, seed):
    return tf.random.stateless_normal([n, z_dim], seed=[seed, 104729])


# ------------------------------------------------------------------------------------------------ run set-up
class Run:
    """Seeding, determinism, precision and the run directory. Only the chief writes the run directory; another
    worker of a multi-worker run writes its share of each checkpoint into a temporary directory (removed in
    close()), because every worker must take part in a save."""

    def __init__(self, args, variant, strategy):
        keras.utils.set_random_seed(args.seed)  # Python, NumPy and TF global seeds (weight initialisation)
        if args.deterministic:
            tf.config.experimental.enable_op_determinism()
        set_precision(args.precision)
        if args.precision == "fp16" and not args.xla and not tf.config.list_logical_devices("GPU"):
            # Measured with benchmarks/bench_train.py: ~150x slower than fp32 (oneDNN has no float16 kernels for
            # these ops on most CPUs, TF falls back to Eigen); XLA's CPU backend does not have that problem.
            print("warning: --precision fp16 on a CPU without --xla runs about 150 times slower than fp32; use fp32 "
                  "or bf16 here, or add --xla.", file=sys.stderr)
        self.args, self.variant, self.strategy = args, variant, strategy
        resolver = getattr(strategy, "cluster_resolver", None)
        task = (resolver.task_type, resolver.task_id) if resolver is not None and resolver.task_type else None
        cluster = resolver.cluster_spec().as_dict() if task else {}
        self.chief = task is None or task[0] == "chief" or (task == ("worker", 0) and "chief" not in cluster)
        self.workers = max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))  # processes in the run
        if args.resume:
            self.dir = args.resume
            self.config = read_config(args.resume)
            self.config.update({k: getattr(args, k) for k in RESUMABLE_FLAGS - {"resume", "out_dir"}})
            self.config.setdefault("resumed", []).append(_now())
        else:
            self.dir = args.out_dir or os.path.join("runs", f"{variant}-{args.dataset}-{_now()}")
            if self.chief and os.path.exists(os.path.join(self.dir, "config.json")):
                raise RunError(f"{self.dir} already holds a run; continue it with --resume {self.dir} or choose "
                               "another --out_dir.")
            self.config = {k: v for k, v in vars(args).items() if k not in ("resume", "out_dir")}
            self.config.update(variant=variant, created=_now(), git_commit=_git_commit(), versions={
                "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                "numpy": np.__version__})
        self.config["replicas"] = strategy.num_replicas_in_sync
        self.write_dir = self.dir if self.chief else tempfile.mkdtemp(prefix=f"{variant}-worker-")

    def save_config(self):
        """Create the run directory and write config.json: called once the data has loaded, so that bad input
        leaves no half-made run behind."""
        if not self.chief:
            return
        try:
            os.makedirs(self.dir, exist_ok=True)
            _write_json(os.path.join(self.dir, "config.json"), self.config)
        except OSError as e:
            raise RunError(f"cannot write the run directory {self.dir} ({e.strerror}).") from None

    def close(self):
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)

    def checkpoints(self, **objects):
        """The run's Checkpoints over `objects` (networks, optimizers, random generator, Progress.state)."""
        return Checkpoints(self.write_dir, self.args.keep_ckpts, read_dir=self.dir, **objects)


# ----------------------------------------------------------------------------------------- progress on device
class Progress:
    """The run's clock and data position, advanced inside the compiled train step so that the loop never reads
    the device between steps, and a record, made in the graph, of the first step with a non-finite value.

    Create it inside strategy.scope(). A step counts as diverged when one of its metrics is NaN or Inf and every
    update of the step was applied: fp16's loss scaler skips an update whose scaled gradients overflowed (and
    lowers the scale), which is its normal working, not a divergence. It is not normal when it never ends: a loss
    scale below 1 (the gradients overflow float16 even scaled down) or FP16_SKIPPED_STEPS generator steps in a row
    in which every update was skipped stop the run as a divergence does.
    """

    FP16_SKIPPED_STEPS = 25  # from a scale of 2^15, 16 skips in a row already take it below 1

    def __init__(self, **optimizers):
        def variable(value, dtype):
            return tf.Variable(value, dtype=dtype, trainable=False)
        self.step = variable(0, tf.int64)  # generator steps: the run's clock (optimizer.iterations is not)
        self.batches = variable(0, tf.int64)  # real batches drawn: the data position
        self.train_seconds = variable(0.0, tf.float64)  # training time so far, written at each save
        self.state = {"step": self.step, "batches": self.batches, "train_seconds": self.train_seconds}
        self.optimizers = optimizers  # name -> optimizer, e.g. generator=g_opt, critic=c_opt
        decay_learning_rates(self.step, *optimizers.values())  # --lr_decay linear follows this clock
        self._updates = variable(0, tf.int64)  # updates the optimizers have applied, at the last step's end
        self._bad_step = variable(-1, tf.int64)  # the first diverged step, or -1
        self._bad_index = variable(0, tf.int32)
        self._bad_value = variable(0.0, tf.float32)
        self._skipped = variable(0, tf.int64)  # generator steps in a row in which every update was skipped
        self._whole = variable(True, tf.bool)  # the last step applied every one of its updates
        self._stuck_step = variable(-1, tf.int64)  # the first step at which fp16's skipping became endless, or -1
        self._stuck_scale = variable(0.0, tf.float32)  # the lowest loss scale at that step
        self._stuck_skipped = variable(0, tf.int64)  # and the steps in a row skipped by then
        self._names = []

    def _applied_updates(self):
        return tf.add_n([tf.cast(o.iterations, tf.int64) for o in self.optimizers.values()])

    def advance(self, metrics, critic_updates):
        """End of a train step, in the graph: count the step and its real batches, record a divergence. Returns
        the metrics, with fp16's loss scales added."""
        metrics = {**metrics, **{f"loss_scale/{name}": loss_scale(o) for name, o in self.optimizers.items()
                                 if hasattr(o, "dynamic_scale")}}
        self._names = list(metrics)
        values = tf.stack([tf.cast(v, tf.float32) for v in metrics.values()])
        finite = tf.math.is_finite(values)
        updates = self._applied_updates()
        all_applied = tf.equal(updates - self._updates, tf.cast(critic_updates, tf.int64) + 1)
        self._skipped.assign(tf.where(tf.equal(updates, self._updates), self._skipped + 1, 0))
        self._whole.assign(all_applied)
        self._updates.assign(updates)
        scales = [v for k, v in metrics.items() if k.startswith("loss_scale/")]  # fp16's, added above
        if scales:  # fp16
            lowest = tf.reduce_min(tf.stack(scales))
            stuck = tf.logical_and(tf.logical_or(lowest < 1.0, self._skipped >= self.FP16_SKIPPED_STEPS),
                                   self._stuck_step < 0)
            self._stuck_step.assign(tf.where(stuck, self.step + 1, self._stuck_step))
            self._stuck_scale.assign(tf.where(stuck, lowest, self._stuck_scale))
            self._stuck_skipped.assign(tf.where(stuck, self._skipped, self._stuck_skipped))
        self.step.assign_add(1)
        self.batches.assign_add(tf.cast(critic_updates, tf.int64))
        first = tf.logical_and(tf.logical_and(all_applied, tf.logical_not(tf.reduce_all(finite))),
                               self._bad_step < 0)
        index = tf.argmin(tf.cast(finite, tf.int32), output_type=tf.int32)
        self._bad_step.assign(tf.where(first, self.step, self._bad_step))
        self._bad_index.assign(tf.where(first, index, self._bad_index))
        self._bad_value.assign(tf.where(first, values[index], self._bad_value))
        return metrics

    def sync(self):
        """After a restore: the optimizers' update counts are the new reference."""
        self._updates.assign(self._applied_updates())

    def last_step_whole(self):
        """False if fp16's loss scaling skipped an update of the last step (reads the device)."""
        return bool(self._whole.numpy())

    def check(self):
        """Raise NonFiniteError if a step diverged or fp16 skips every update for good (reads the device: call it
        where the loop syncs anyway). The values are the same on every replica and worker (reduced metrics,
        mirrored variables), so every worker stops at the same step."""
        step = int(self._bad_step.numpy())
        if step >= 0:
            raise NonFiniteError(f"At step {step} {self._names[int(self._bad_index.numpy())]} became "
                                 f"{float(self._bad_value.numpy())}, so training stopped.")
        step = int(self._stuck_step.numpy())
        if step >= 0:
            skipped, scale = int(self._stuck_skipped.numpy()), float(self._stuck_scale.numpy())
            what = (f"skipped every update of {skipped} steps in a row" if skipped >= self.FP16_SKIPPED_STEPS else
                    f"lowered its loss scale to {scale:g} (the gradients overflow float16 even scaled down)")
            raise NonFiniteError(f"At step {step} fp16 loss scaling had {what}, so training stopped; start a new run "
                                 "with --precision bf16 or fp32, or a lower --lr.")


def check_finite_weights(step, objects):
    """NonFiniteError naming the first variable of `objects` (models, optimizers) that holds NaN or Inf."""
    named = [(name, v) for name, obj in objects.items() for v in getattr(obj, "variables", [])
             if tf.as_dtype(v.dtype).is_floating]
    if not named:
        return
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(v)) for _, v in named]).numpy()  # one read of the device
    if not finite.all():
        name, v = named[int(np.argmin(finite))]
        raise NonFiniteError(f"At step {step} {name}'s variable {getattr(v, 'path', v.name)} holds NaN or Inf, "
                             "so training stopped.")


# --------------------------------------------------------------------------------------------- checkpoints
class Checkpoints:
    """tf.train.Checkpoint + CheckpointManager over everything a resumed run needs to continue as if never stopped.

    A save never writes a non-finite state, and a failed save (full disk, unwritable directory) ends with one
    sentence while the checkpoints already there stay intact: TensorFlow writes each checkpoint under a temporary
    name and switches the `checkpoint` index file atomically, so a kill at any moment leaves the previous one.
    """

    def __init__(self, run_dir, keep, read_dir=None, **objects):
        # The best score so far travels with the run, so that a resumed run keeps comparing against it.
        self.best_score = tf.Variable(float("inf"), dtype=tf.float64, trainable=False)
        self.objects = objects
        self.checkpoint = tf.train.Checkpoint(best_score=self.best_score, **objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(run_dir, "ckpt"), max_to_keep=keep,
                                                  checkpoint_name="ckpt")
        self.best = tf.train.CheckpointManager(self.checkpoint, os.path.join(run_dir, "ckpt_best"), max_to_keep=1,
                                               checkpoint_name="ckpt")
        self.read_dir = read_dir or run_dir
        self.saved = None  # the step of the last checkpoint this run saved or restored

    def _save(self, manager, step):
        check_finite_weights(step, self.objects)
        try:
            manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            kept = manager.latest_checkpoint
            raise RunError(f"cannot save the checkpoint of step {step} in {manager.directory} ({_first_line(e)}); "
                           f"the checkpoints already there are intact (newest: {kept or 'none'}), so free space or "
                           "fix permissions and continue with --resume.") from None

    def save_if_best(self, step, score):
        """Keep this step in ckpt_best/ if its score (lower is better) beats every earlier one; True if it did."""
        if not score < float(self.best_score):  # also False for NaN
            return False
        self.best_score.assign(score)
        self._save(self.best, step)
        return True

    def save(self, step):
        """Save as ckpt-<step>, unless this run already saved or restored that step (a final save right after a
        periodic one). A step replayed after falling back from a damaged checkpoint is saved again."""
        if step != self.saved:
            self._save(self.manager, step)
            self.saved = step

    def restore_latest(self):
        """Restore the newest readable checkpoint; None if the run has none yet (a run stopped before its first
        checkpoint starts again from step 0). A damaged newest checkpoint falls back to the one before it."""
        # Newest first; TF already prefixes relative entries with the directory.
        state = tf.train.get_checkpoint_state(os.path.join(self.read_dir, "ckpt"))
        paths = list(reversed(state.all_model_checkpoint_paths)) if state else []
        first_error = None
        for path in paths:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:  # IndexError: truncated data
                first_error = first_error or (path, e)
                continue
            if first_error:
                print(f"warning: {first_error[0]} cannot be read ({_first_line(first_error[1])}); resumed from "
                      f"{path} instead.", file=sys.stderr)
            self._keep_best_of(os.path.join(self.read_dir, "ckpt_best"))
            self.saved = int(path.rsplit("-", 1)[1])
            return path
        if first_error:
            path, e = first_error
            raise RunError(f"{path} does not fit this script's networks and optimizers ({_first_line(e)}).")
        return None

    def _keep_best_of(self, best_dir):
        """The best score is the better of the restored one and ckpt_best/'s: after a crash the newest periodic
        checkpoint can be older than the best one, and a worse score must not replace the true best."""
        best = tf.train.latest_checkpoint(best_dir) if os.path.isdir(best_dir) else None
        if best:
            stored = tf.train.load_variable(best, "best_score/.ATTRIBUTES/VARIABLE_VALUE")
            self.best_score.assign(np.fmin(float(self.best_score), float(stored)))


def _first_line(e):
    """The gist of a TF error: its first line, without the {{function_node ...}} prefix, at most 200 characters."""
    text = str(e).strip()
    if text.startswith("{{"):
        text = text.split("}}", 1)[-1].strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def checkpoint_path(run_dir, step=None, best=False):
    """The newest checkpoint of a run (or the one at `step`, or the best one); RunError if there is none."""
    ckpt_dir = os.path.join(run_dir, "ckpt_best" if best else "ckpt")
    if step is None:
        path = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
        if path is None:
            what = "best checkpoint (train with --eval_every to keep one)" if best else "checkpoint yet"
            raise RunError(f"{run_dir} has no {what}.")
        return path
    path = os.path.join(ckpt_dir, f"ckpt-{step}")
    if not os.path.exists(path + ".index"):
        kept = sorted(int(f[5:-6]) for f in os.listdir(ckpt_dir) if f.startswith("ckpt-") and f.endswith(".index")) \
            if os.path.isdir(ckpt_dir) else []
        raise RunError(f"{run_dir} has no checkpoint at step {step} (kept steps: "
                       f"{', '.join(map(str, kept)) or 'none'}).")
    return path


def load_generator(run_dir, step=None, best=False):
    """Rebuild a run's generator from config.json and restore its weights; returns (generator, config, path)."""
    config = saved_flags(run_dir)
    path = checkpoint_path(run_dir, step, best)
    generator = ops.make_generator(config["image_size"], config["channels"], config["z_dim"], config["width"],
                                   arch=config["arch"], first_bn=config["first_bn"])
    try:
        tf.train.Checkpoint(generator=generator).read(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:  # IndexError: truncated data
        raise RunError(f"{path} cannot be restored into the generator described by config.json "
                       f"({_first_line(e)}).") from None
    return generator, config, path


# ------------------------------------------------------------------------------------------------- logging
class Logger:
    """Progress bar with the current losses, TensorBoard scalars and images, and metrics.jsonl.

    A resumed run replays the steps after its checkpoint, so their old records (metrics.jsonl lines, TensorBoard
    events) are dropped first: every tag keeps one line.
    """

    def __init__(self, run_dir, total_steps, start_step):
        from tqdm import tqdm
        _drop_history_after(run_dir, start_step)
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs"))
        self.jsonl = open(os.path.join(run_dir, "metrics.jsonl"), "a")
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                        disable=None)  # None: a bar only on a terminal

    def log(self, step, values):
        self.scalars(step, values)
        shown = {k: f"{v:.4g}" for k, v in values.items() if k not in ("images_per_sec", "train_seconds")}
        if self.bar.disable:  # no terminal (a log file, a batch job): one line per logging step instead of a bar
            print(f"step {step}/{self.bar.total} " + " ".join(f"{k} {v}" for k, v in shown.items()), flush=True)
        else:
            self.bar.set_postfix(shown, refresh=False)

    def scalars(self, step, values):
        with self.writer.as_default(step=step):
            for k, v in values.items():
                tf.summary.scalar(k, v)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()

    def write(self, line):
        self.bar.write(line)

    def image(self, step, grid):
        with self.writer.as_default(step=step):
            tf.summary.image("samples", grid[None])

    def close(self):
        self.bar.close()
        self.writer.flush()
        self.jsonl.close()


def _drop_history_after(run_dir, step):
    """Remove metrics.jsonl lines and TensorBoard events of steps after `step` (and a line torn by a kill)."""
    from tensorflow.core.util import event_pb2
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        kept = []
        with open(path) as f:
            for line in f:
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    pass  # a line torn by kill -9
        files.write_text(path, "".join(kept))
    for events in glob.glob(os.path.join(run_dir, "logs", "events.out.tfevents.*")):
        records, dropped = [], False
        try:
            for record in tf.data.TFRecordDataset(events):
                event = event_pb2.Event.FromString(record.numpy())
                if event.step > step:
                    dropped = True
                else:
                    records.append(record.numpy())
        except tf.errors.DataLossError:  # a record torn by kill -9 ends the file
            dropped = True
        if dropped:
            with files.atomic_path(events) as tmp, tf.io.TFRecordWriter(tmp) as writer:
                for record in records:
                    writer.write(record)


def save_samples(generator, noise, run_dir, step, logger=None):
    """Write samples/step_NNNNNN.png from the fixed noise, BatchNorm in inference mode (moving statistics)."""
    images = data.to_uint8(generator(noise, training=False))
    grid = data.image_grid(images, SAMPLE_GRID, SAMPLE_GRID)
    path = os.path.join(run_dir, "samples", f"step_{step:06d}.png")
    data.save_image(grid, path)
    if logger is not None:
        logger.image(step, grid)
    return path


# ---------------------------------------------------------------------------------------------- the loop
class StopRequest:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a request that the loop honours between steps, so that the
    checkpoint saved on the way out is of a whole step. A second Ctrl-C stops at once (still saving that
    checkpoint: a Python signal never lands inside the compiled step)."""

    def __init__(self, workers=1):
        self.requested, self.workers = False, workers
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        when = "after this step" if self.workers == 1 else "at the next log step, together with the other workers,"
        print(f"\nstopping {when} and saving a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr)

    def close(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class Training:
    """Everything around the scripts' train-step calls: the Python step counter, logging, sample grids,
    evaluation, checkpoints, the --minutes budget, Ctrl-C, and what happens on an error.

        with common.Training(run, ckpt, progress, generator, evaluate) as loop:
            for step in loop.steps():                      # 0-based index of the step about to run
                loop.end_step(train_step(...), images=...)

    The loop reads the device only on log, sample, evaluation and checkpoint steps. On a non-finite value it
    stops with NonFiniteError and saves nothing. On any other error it saves the last completed step (when its
    state is finite) before the error is reported, unless the error came from inside the compiled step, which
    may have applied part of that step's updates.
    """

    def __init__(self, run, ckpt, progress, generator, evaluate=None):
        self.run, self.args, self.ckpt, self.progress = run, run.args, ckpt, progress
        self.stopping = False  # several workers: agreed by all of them (_agree_to_stop)
        self.generator, self.evaluate = generator, evaluate
        self.step = int(progress.step.numpy())  # the host's copy of the clock, so the loop never reads the device's
        self.noise = fixed_noise(self.args.seed, self.args.z_dim)
        self.clock = float(progress.train_seconds.numpy())  # training seconds, evaluation and saving excluded
        self.in_step = False
        self.metrics, self.logged = None, self.step
        self.save_pending = False  # a periodic checkpoint put off past a step with a skipped fp16 update

    def __enter__(self):
        self.progress.sync()
        self.log = Logger(self.run.write_dir, self.args.steps, self.step)
        self.stop = StopRequest(self.run.workers)
        self.mark = (self.step, 0, self.clock)  # step, images and clock at the last log line
        self.images = 0
        self.started = time.perf_counter()
        return self

    def seconds(self):
        return self.clock + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def _wants_to_stop(self):
        """This process's own reasons to stop: Ctrl-C or SIGTERM, or (the chief's clock) the --minutes budget."""
        budget = self.args.minutes * 60 or float("inf")
        return self.stop.requested or (self.run.chief and self.seconds() >= budget)

    def steps(self):
        # One process decides alone, before every step. Several workers must stop after the same step (each step
        # is a collective of all of them: a worker that leaves early hangs or kills the others), so they decide
        # together, at the loop's sync points (_agree_to_stop).
        while self.step < self.args.steps and not self.stopping and not (self.run.workers == 1
                                                                         and self._wants_to_stop()):
            self.in_step = True
            yield self.step

    def end_step(self, metrics, images):
        self.in_step = False
        self.step += 1
        self.images += images
        self.metrics = metrics
        self.log.bar.update(1)
        i, args = self.step, self.args

        def due(every):
            return every > 0 and i % every == 0
        log, sample, evaluate, save = (due(args.log_every) or i == args.steps, due(args.sample_every),
                                       self.evaluate is not None and due(args.eval_every),
                                       due(args.ckpt_every) or self.save_pending)
        if log or sample or evaluate or save:
            self._pause()  # reads the metrics: waits for the device to finish this step
            if self.run.workers > 1:
                self.stopping = self._agree_to_stop()
            if log:
                self._log()
            if sample and self.run.chief:
                save_samples(self.generator, self.noise, self.run.dir, i, self.log)
            if evaluate:  # on every worker, so that all of them take part in saving the best checkpoint
                score = self.evaluate(self.generator, i, self.log)
                if not math.isfinite(score):
                    raise NonFiniteError(f"At step {i} the evaluation score became {score}, so training stopped.")
                self.ckpt.save_if_best(i, score)  # before the periodic save, which holds the best score
            if save:
                # Periodic checkpoints hold whole steps only: after an fp16 step that skipped an update the save
                # waits for the next whole one, so a run whose skipping never ends (Progress.check stops it) has
                # saved nothing after its last good step.
                self.save_pending = not self.progress.last_step_whole()
                if not self.save_pending:
                    self._save()
            self.started = time.perf_counter()

    def _agree_to_stop(self):
        """Several workers: True on every worker if any of them wants to stop, by one all-reduce of a flag.
        Called at the same steps on all of them (the sync points are a function of the step and the flags)."""
        if not hasattr(self, "_flag_sum"):
            strategy = self.run.strategy

            @tf.function
            def flag_sum(flag):
                return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(flag,)), axis=None)
            self._flag_sum = flag_sum
        return float(self._flag_sum(tf.constant(float(self._wants_to_stop())))) > 0

    def _stop_clock(self):
        if self.started is not None:
            self.clock, self.started = self.seconds(), None

    def _pause(self):
        values = {k: float(v) for k, v in self.metrics.items()}  # waits for the device
        self._stop_clock()
        self.progress.check()
        self.values = values

    def _log(self):
        step, images, clock = self.mark
        seconds = max(self.clock - clock, 1e-9)
        self.log.log(self.step, {**self.values, "steps_per_sec": (self.step - step) / seconds,
                                 "images_per_sec": (self.images - images) / seconds, "train_seconds": self.clock})
        self.mark, self.logged = (self.step, self.images, self.clock), self.step

    def _save(self):
        self.progress.train_seconds.assign(self.clock)
        self.ckpt.save(int(self.progress.step.numpy()))

    def __exit__(self, kind, error, tb):
        self.stop.close()
        try:
            if error is None:
                if self.metrics is not None and self.started is not None:
                    self._pause()
                    if self.logged != self.step:
                        self._log()
                self._save()
                if self.run.chief:
                    save_samples(self.generator, self.noise, self.run.dir, self.step, self.log)
            elif not isinstance(error, NonFiniteError):
                self._save_after(error)
        finally:
            with contextlib.suppress(Exception):  # never hide the error that ended the run
                self.log.close()
            self.run.close()
        return False

    def _save_after(self, error):
        """Save the last completed step before `error` is reported, if that state is whole and finite."""
        if self.in_step and isinstance(error, tf.errors.OpError):
            print(f"error inside step {self.step + 1}, which may have applied part of its updates; the newest "
                  f"checkpoint ({self.ckpt.manager.latest_checkpoint or 'none yet'}) is where --resume continues.",
                  file=sys.stderr)
            return
        try:
            self._stop_clock()
            self.progress.check()
            self._save()
            print(f"saved the checkpoint of step {int(self.progress.step.numpy())} before stopping on the error below.",
                  file=sys.stderr)
        except Exception as e:  # noqa: BLE001 -- the original error is the one to report
            print(f"could not save a checkpoint before stopping ({e}).", file=sys.stderr)


_INFERENCE = weakref.WeakKeyDictionary()  # generator -> its traced inference function, reused across calls


def generate(generator, z, batch_size=500):
    """uint8 images [N, H, W, C] for z [N, z_dim], in batches, BatchNorm in inference mode (moving statistics)."""
    if generator not in _INFERENCE:  # trace once per generator, not at every --eval_every evaluation
        _INFERENCE[generator] = tf.function(lambda z: generator(z, training=False))
    run = _INFERENCE[generator]
    if len(z) == 0:
        return np.zeros((0, *generator.output_shape[1:]), np.uint8)
    return np.concatenate([data.to_uint8(run(z[i:i + batch_size])) for i in range(0, len(z), batch_size)])


def generate_images(generator, n, z_dim, seed=0, batch_size=500):
    """n images as uint8 (n, H, W, C) from z ~ N(0, I) drawn statelessly from `seed`."""
    return generate(generator, noise(n, z_dim, seed), batch_size)

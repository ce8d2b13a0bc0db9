"""The run: what dcgan.py, wgan.py and wgan_gp.py share that is neither algorithm nor devices.

Flags every script spells the same way and their validation, config.json (written, read back and checked), the
run directory and seeding, checkpoints (save, restore, refuse a mismatch, never save a non-finite state), and
drawing images from a saved generator (sample.py, metrics.py). How a step is spread over devices and precisions is
devices.py's; the loop around the steps (logging, sample grids, Ctrl-C, the time budget) is training.py's. What
differs between the variants (losses, constraint, optimizer, normalisation, the train step) stays in the scripts.

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
import argparse
import datetime
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
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
CONFIG_MAX_BYTES = 1 << 20  # a config.json is a few KB; a larger one is not read
RESUMABLE_FLAGS = {"steps", "resume", "out_dir", "data_dir", "ckpt_every", "sample_every", "log_every",
                   "keep_ckpts", "xla", "eval_every", "eval_samples", "eval_extra", "strategy", "minutes",
                   "steps_per_call"}
STEPS_PER_CALL = 50  # --steps_per_call's default (docs/speed.md, "The fixed cost of a step")


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
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}; fix that and start again (a run "
              "that has saved a checkpoint continues with --resume RUN_DIR).", file=sys.stderr)
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
    """Flags that mean the same thing in all three scripts, spelled the same way, in --help's groups. Returns the
    training group, to which each script adds its algorithm's own flags. docs/running.md has the long story."""
    groups = {name: parser.add_argument_group(name) for name in
              ("data", "networks", "training", "run directory", "devices and precision", "evaluation")}
    add = groups["data"].add_argument
    add("--dataset", default="fashion_mnist", choices=data.DATASETS, help="training images")
    add("--data_dir", default=None, help="the dataset's files (required for folder); default: its usual place")
    add("--image_size", type=int, default=32, help="images are brought to image_size x image_size (see --fit)")
    add("--channels", type=int, default=1, choices=(1, 3), help="1 = grayscale, 3 = RGB (converted as needed)")
    add("--fit", default="resize", choices=data.FITS,
        help="resize bilinearly, or pad the original pixels on a black canvas (built-in datasets only)")
    add("--dequantize", action="store_true",
        help="pixels (v + U(0, 1)) / 128 - 1 instead of v / 127.5 - 1 (WGAN-GP's CIFAR-10 code)")
    add = groups["networks"].add_argument
    add("--z_dim", type=int, default=100, help="size of z ~ N(0, I) (the DCGAN paper drew U[-1, 1])")
    add("--width", type=int, default=64, help="channels of D's first / G's last hidden layer; doubles per halving")
    add("--norm", default=norm, choices=norms, help="normalisation in the critic's hidden layers")
    add("--arch", default="dcgan", choices=ops.ARCHS, help="networks: the papers' variants (docs/architectures.md)")
    add("--first_bn", default=first_bn, choices=ops.FIRST_BNS,
        help="G's first BatchNorm per unit of z's projection (Newmu/dcgan_code) or per channel (dcgan.torch)")
    add = groups["training"].add_argument
    add("--batch_size", type=int, default=batch_size, help="global batch size (split evenly across devices)")
    add("--steps", type=int, default=steps, help="generator steps of the whole run (the papers: 100k-200k)")
    add("--minutes", type=float, default=0, help="also stop, with a checkpoint, after this much training time")
    add("--seed", type=int, default=0, help="seeds weights, noise, data order and --dequantize's noise")
    add("--deterministic", action="store_true", help="TF op determinism: runs repeat bit for bit (slower on GPUs)")
    add("--lr_decay", default="none", choices=("none", "linear"),
        help="learning rates constant, or linear to 0 over --steps (WGAN-GP's CIFAR-10 ResNet)")
    add = groups["run directory"].add_argument
    add("--out_dir", default=None, help="run directory; if not given: runs/<variant>-<dataset>-<time>-<random>")
    add("--resume", default=None, metavar="RUN_DIR", help="continue RUN_DIR from its newest checkpoint")
    add("--ckpt_every", type=int, default=1000, help="save a checkpoint every N steps (and at the end, on Ctrl-C)")
    add("--keep_ckpts", type=int, default=3, help="how many of the newest checkpoints to keep")
    add("--sample_every", type=int, default=500, help="write a sample grid from the fixed noise every N steps")
    add("--log_every", type=int, default=50, help="write losses to TensorBoard and metrics.jsonl every N steps")
    add = groups["devices and precision"].add_argument
    add("--strategy", default="auto", choices=STRATEGIES,
        help="auto = all local GPUs if two or more; mirrored; multi_worker (TF_CONFIG; docs/devices.md)")
    add("--precision", default="fp32", choices=tuple(PRECISIONS), help="fp32, or mixed bf16 / fp16 (loss scaling)")
    add("--xla", action="store_true", help="compile each device's train step with XLA (jit_compile=True)")
    add("--steps_per_call", type=int, default=STEPS_PER_CALL,
        help="at most this many generator steps per compiled call, each call about a second at most (fewer calls "
             "from Python: docs/speed.md); results do not change")
    add = groups["evaluation"].add_argument
    add("--eval_every", type=int, default=0, help="score G every N steps, keep the best checkpoint (0 = never)")
    add("--eval_samples", type=int, default=10000, help="generated images per evaluation")
    # Lower-is-better metrics only (the Inception Score is higher-is-better, so it cannot pick a best).
    add("--metric", default=None, choices=("classifier_fd", "classifier_kid", "fid", "kid"),
        help="what --eval_every computes; default classifier_fd on (Fashion-)MNIST, else fid")
    add("--eval_extra", nargs="*", default=[], metavar="METRIC",
        help="metrics.py metrics also logged at each evaluation, e.g. classifier_recall classes")
    return groups["training"]


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
    problem = flag_problem(vars(args))
    if problem:
        name, value, what = problem
        raise RunError(f"--{name} must be {what}, not {value}.")
    return args


# Checked for every script that has the flag: (flags, test, what the value must be).
_FLAG_RULES = [
    (("steps", "batch_size", "ckpt_every", "sample_every", "log_every", "keep_ckpts", "width", "z_dim",
      "n_critic", "eval_samples", "gen_batch_multiple", "image_size", "steps_per_call"), lambda v: v >= 1,
     "at least 1"),
    (("eval_every", "minutes"), lambda v: v >= 0, "0 (off) or positive"),
    (("lr", "clip"), lambda v: v > 0, "positive"),
    (("gp_weight",), lambda v: v >= 0, "0 or positive"),
    (("beta1", "beta2"), lambda v: 0 <= v < 1, "in [0, 1)"),
    (("seed",), lambda v: 0 <= v < 2 ** 31, "in [0, 2^31)"),
]


def flag_problem(flags):
    """(name, value, what it must be) of the first invalid value in `flags` (a dict of flag values), or None."""
    for names, ok, what in _FLAG_RULES:
        for name in names:
            value = flags.get(name)
            if value is not None and not (math.isfinite(value) and ok(value)):
                return name, value, what
    try:
        ops.check_arch(flags.get("arch", "dcgan"), flags["image_size"])
    except ValueError as e:
        return "image_size", flags["image_size"], f"a size the architecture can be built at ({str(e).rstrip('.')})"
    # --eval_samples against the metric's needs: metrics.Evaluator checks it, built before anything is written
    # (metrics imports this module, not the other way round).
    return None


# The scripts' own flags and their types, for reading a config.json back (the common flags' come from the parser).
_SCRIPT_FLAG_TYPES = {"lr": float, "beta1": float, "beta2": float, "clip": float, "gp_weight": float, "n_critic": int,
                      "gen_batch_multiple": int, "critic_warmup": bool}


def _value_problem(action, value):
    """What `value` must be for the flag of argparse `action`, if it is not that; else None."""
    kind = bool if isinstance(action, argparse._StoreTrueAction) else action.type or str
    if action.nargs == "*":
        ok = isinstance(value, list) and all(isinstance(v, kind) for v in value)
        return None if ok else f"a list of {kind.__name__}"
    if value is None and action.default is None:
        return None
    ok = type(value) is kind or (kind is float and type(value) is int)  # type(): True is not an int here
    if action.choices is not None:
        return None if ok and value in action.choices else f"one of {', '.join(map(str, action.choices))}"
    return None if ok else f"of type {kind.__name__}"


def config_problem(config):
    """(key, value, what it must be) of the first value of a config.json that the scripts could not have written,
    or None: types and choices as the flags define them, then the flags' ranges."""
    parser = argparse.ArgumentParser()
    add_common_flags(parser, batch_size=1, steps=1, norm="none", first_bn=ops.FIRST_BNS[0])
    actions = {a.dest: a for a in parser._actions}
    for key, value in config.items():
        if key in actions:
            what = _value_problem(actions[key], value)
        elif key in _SCRIPT_FLAG_TYPES:
            kind = _SCRIPT_FLAG_TYPES[key]
            what = _value_problem(argparse.Action([], key, type=kind, default=kind()), value)
        else:
            continue
        if what:
            return key, value, what
    return flag_problem(config)


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
        if os.path.getsize(path) > CONFIG_MAX_BYTES:
            raise ValueError(f"over {CONFIG_MAX_BYTES} bytes")
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise RunError(f"{path} cannot be read as JSON ({e}).") from None
    if not isinstance(config, dict) or config.get("variant") not in VARIANTS:
        raise RunError(f"{path} is not the config of a dcgan/wgan/wgan_gp run.")
    missing = [k for k in ("image_size", "channels", "z_dim", "width", "seed", "dataset") if k not in config]
    if missing:
        raise RunError(f"{path} lacks {', '.join(missing)}; it was not written by these scripts or was edited.")
    problem = config_problem(config)
    if problem:
        key, value, what = problem
        raise RunError(f"{path} holds {key} {json.dumps(value)[:80]}, which must be {what}: the file was edited or "
                       "is not from these scripts, so restore it or start a new run.")
    return config


def _check_new_run_dir(run_dir):
    """RunError before anything is written if a new run cannot have `run_dir`: it holds a run, or other files."""
    if os.path.exists(os.path.join(run_dir, "config.json")):
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another "
                       "--out_dir.")
    if os.path.lexists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        raise RunError(f"{run_dir} exists and is not an empty folder, and holds no run; choose another --out_dir "
                       "(it is left as it is).")


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
            # A random suffix: runs of a sweep started in the same second get folders of their own.
            self.dir = args.out_dir or os.path.join("runs", f"{variant}-{args.dataset}-{_now()}-{secrets.token_hex(2)}")
            if self.chief:
                _check_new_run_dir(self.dir)
            self.config = {k: v for k, v in vars(args).items() if k not in ("resume", "out_dir")}
            self.config.update(variant=variant, created=_now(), git_commit=_git_commit(), versions={
                "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                "numpy": np.__version__})
        self.config["replicas"] = strategy.num_replicas_in_sync
        self.write_dir = self.dir if self.chief else tempfile.mkdtemp(prefix=f"{variant}-worker-")

    def save_config(self):
        """Create the run directory and write config.json: called once the data has loaded, so that bad input
        leaves no half-made run behind. A new run's config.json is created exclusively: that write claims the
        folder, so of two runs given one folder (or one default name) exactly one goes on."""
        if not self.chief:
            return
        path = os.path.join(self.dir, "config.json")
        text = json.dumps(self.config, indent=2, sort_keys=True) + "\n"
        try:
            os.makedirs(self.dir, exist_ok=True)
            files.write_text(path, text, exclusive=not self.args.resume)
        except FileExistsError:
            raise RunError(f"{self.dir} was claimed by another run a moment ago; choose another --out_dir.") from None
        except OSError as e:
            raise RunError(f"cannot write the run directory {self.dir} ({e.strerror}).") from None

    def close(self):
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)

    def checkpoints(self, **objects):
        """The run's Checkpoints over `objects` (networks, optimizers, random generator, Progress.state)."""
        return Checkpoints(self.write_dir, self.args.keep_ckpts, read_dir=self.dir, **objects)


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
    restore_network(path, "generator", generator)
    return generator, config, path


def restore_network(path, name, network):
    """Restore the checkpoint object `name` ("generator" or "critic") of the checkpoint at `path` into `network`;
    RunError in one sentence if it does not fit."""
    try:
        tf.train.Checkpoint(**{name: network}).read(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:  # IndexError: truncated data
        raise RunError(f"{path} cannot be restored into the {name} described by config.json "
                       f"({_first_line(e)}).") from None


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

"""Sample quality against training time: each variant trained for the same budget, scored as it trains, one plot.

    python experiments/quality.py                          # dcgan, wgan, wgan_gp: 10 training minutes each
    python experiments/quality.py --runs dcgan "dcgan --batch_size 64" --label dcgan-b128 dcgan-b64
    python experiments/quality.py --variants dcgan --extra "--batch_size 64" --label dcgan-b64 \
        --out_dir runs/quality-20261127-120000            # add a run to the plot of another command
    python experiments/quality.py --variants wgan_gp --steps 2000 --points 20   # a step budget instead of time
    python experiments/quality.py --out_dir runs/quality-20261127-120000 --plot_only   # redraw CSV, plot, grids

Each run is one training script (`dcgan.py`, `wgan.py`, `wgan_gp.py`) with its defaults plus the run's flags, as a
subprocess, one after another (never two at once), with `--minutes M` of training time (evaluation, sample grids
and checkpoints excluded; `--steps` is raised out of the way so that time is the only limit) or `--steps N`.
While it trains, the script scores `--eval_samples` images with `--metric` every `--eval_every` steps; the clock
stops during evaluation, so the curves are quality against training time. The final checkpoint is scored the same
way (metrics.py, same noise seed) when its step was not an evaluation step. A run is "VARIANT [script flags]"; its
label is that text unless --label names it. Runs added later to the same --out_dir join the same plot, so a
comparison can be built up over several commands (the metric and sample count must match). The default command
takes about 40 minutes on the 2-core development CPU: 30 of training, the rest calibration, evaluation, start-ups
and, the first time, training the offline classifier of classifier_fd (90 s, then cached).

Cadence (why --eval_every is chosen as it is): the scripts evaluate every N generator steps, but the variants
differ several-fold in speed, and the speed depends on the machine. With --minutes, each run is first calibrated:
the same command trains for --calibration_minutes in a throwaway directory, logging every step, and the cost of a
generator step is fitted as unit * (critic updates + 1), the first step (tracing) apart. Projecting that over the
variant's critic schedule (WGAN's 100-update warm-up included) predicts the steps the budget will reach, and
--eval_every is that divided by --points, rounded to a round number (about 8-12 points per curve). --log_every is
set to divide it, so each evaluation row carries the losses logged at the same step. Evaluating inside the
training process keeps the budget honest without keeping dozens of checkpoints.

Written into --out_dir (default runs/quality-<time>):
    quality.csv    run, variant, step, train_minutes, <metric>, then every logged value at that step
    quality.png    <metric> against training minutes, one line per run (matplotlib: requirements-dev.txt)
    samples.png    each run's final fixed-noise sample grid, enlarged --scale times, side by side
    quality.json   the runs: flags, budget, calibration, cadence, final score, machine
    <run>/         each run directory (config.json, ckpt/, samples/, metrics.jsonl, logs/)
    logs/          each script's console output
"""
import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the WGAN warm-up schedule (wgan.critic_iters), the atomic writer
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # here and in the scripts: no TensorFlow start-up chatter

import files  # noqa: E402

VARIANTS = ("dcgan", "wgan", "wgan_gp")
METRICS = ("classifier_fd", "classifier_kid", "fid", "kid")  # lower is better; what --eval_every accepts
# quality.py sets these itself; in a run's flags they would be overridden or break the experiment.
OWN_FLAGS = ("--out_dir", "--resume", "--steps", "--minutes", "--eval_every", "--eval_samples", "--metric", "--help")
SCRIPT_LOG_EVERY = 50  # the scripts' default --log_every
NO_LIMIT = 10 ** 9  # --steps for a time budget: a run stops by --minutes only
NICE = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)  # round intervals: neighbours differ by at most 25%
# The logged values in the CSV, in this order, then any others alphabetically.
LOGGED_ORDER = ("critic_loss", "generator_loss", "wasserstein", "gradient_penalty", "grad_norm", "clipped_share",
                "d_real", "d_fake", "steps_per_sec", "images_per_sec")


class QualityError(Exception):
    """A problem the user can fix; str(e) is one sentence."""


# ----------------------------------------------------------------------------------------------------- flags
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--runs", "--variants", dest="runs", nargs="+", default=None, metavar="RUN",
        help='runs in order, each "VARIANT [script flags]", e.g. dcgan "dcgan --batch_size 64" '
             f"(default: {' '.join(VARIANTS)})")
    add("--extra", default="", metavar="FLAGS",
        help='flags added to every run, e.g. --extra "--batch_size 64" (a single flag needs --extra=--flag)')
    add("--label", nargs="+", default=None,
        help="names of the runs in the plot and CSV, one per run (default: the run's text)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None,
                        help="training minutes per run, evaluation and saving excluded (default 10)")
    budget.add_argument("--steps", type=int, default=None, help="train each run for N generator steps instead")
    add("--points", type=int, default=10, help="evaluations to aim for per run (default 10)")
    add("--metric", default="classifier_fd", choices=METRICS, help="the score (default classifier_fd; see metrics.py)")
    add("--eval_samples", type=int, default=5000, help="generated images per evaluation (default 5000)")
    add("--eval_extra", nargs="*", default=[], metavar="METRIC",
        help="metrics logged beside --metric at each evaluation, as columns of quality.csv (the scripts' "
             "--eval_extra), e.g. classifier_precision classifier_recall classes: mode collapse in numbers")
    add("--calibration_minutes", type=float, default=0.5,
        help="with --minutes: training minutes of the throwaway run that measures each run's speed "
             "(default 0.5)")
    add("--scale", type=int, default=3,
        help="nearest-neighbour enlargement of the sample grids in samples.png (default 3)")
    add("--out_dir", default=None, help="output directory (default runs/quality-<time>); runs accumulate in it")
    add("--plot_only", action="store_true", help="train nothing: redraw the outputs from the runs in --out_dir")
    args = parser.parse_args(argv)
    if args.plot_only:
        if args.out_dir is None:
            parser.error("--plot_only needs the --out_dir that holds the runs to draw")
        if args.runs or args.label or args.extra or args.minutes is not None or args.steps is not None:
            parser.error("--plot_only trains nothing, so it takes no runs, labels, extra flags or budget")
        args.run_specs = []
        return args
    if args.minutes is None and args.steps is None:
        args.minutes = 10.0
    for name, ok in (("minutes", args.minutes is None or args.minutes > 0),
                     ("steps", args.steps is None or args.steps >= 1),
                     ("points", args.points >= 1), ("eval_samples", args.eval_samples >= 2),
                     ("calibration_minutes", args.calibration_minutes > 0), ("scale", args.scale >= 1)):
        if not ok:
            parser.error(f"--{name} must be positive" + (" (at least 2)" if name == "eval_samples" else ""))
    try:
        args.run_specs = run_specs(args.runs or list(VARIANTS), args.extra, args.label)
    except QualityError as e:
        parser.error(str(e))
    args.out_dir = args.out_dir or os.path.join("runs", f"quality-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    return args


def run_specs(runs, extra="", labels=None):
    """[{label, variant, flags, name}] from "VARIANT [flags]" texts, the flags added to all, and optional labels."""
    try:
        extra_flags = shlex.split(extra)
        specs = [shlex.split(run) for run in runs]
    except ValueError as e:
        raise QualityError(f"cannot split the run flags into words ({e})") from None
    if labels is not None and len(labels) != len(runs):
        raise QualityError(f"{len(labels)} --label for {len(runs)} runs; give one label per run")
    out = []
    for i, words in enumerate(specs):
        if not words or words[0] not in VARIANTS:
            raise QualityError(f"the run {runs[i]!r} does not start with a variant ({', '.join(VARIANTS)})")
        flags = words[1:] + extra_flags
        for flag in flags:
            name = flag.split("=", 1)[0]
            # argparse also accepts unambiguous prefixes, e.g. --minute for --minutes.
            if name.startswith("--") and len(name) > 2 and any(own.startswith(name) for own in OWN_FLAGS):
                raise QualityError(f"{name} is set by quality.py (use its --minutes, --steps, --metric, "
                                   f"--eval_samples or --out_dir), not in a run's flags")
            if name == "-h":
                raise QualityError("-h is not a training flag")
        label = labels[i] if labels else shlex.join([words[0], *flags])
        out.append({"label": label, "variant": words[0], "flags": flags, "name": run_dir_name(label)})
    for key, what in (("label", "label"), ("name", "directory name")):
        seen = [spec[key] for spec in out]
        twice = sorted({x for x in seen if seen.count(x) > 1})
        if twice:
            raise QualityError(f"two runs have the {what} {twice[0]!r}; give them different --label")
    return out


def run_dir_name(label):
    """A directory name for a label: 'dcgan --batch_size 64' -> 'dcgan_batch_size_64'."""
    name = re.sub(r"[^A-Za-z0-9.+-]+", "_", label.replace("--", " ")).strip("_.")
    return name or "run"


# ------------------------------------------------------------------------------------------------ cadence
def critic_updates(config, step):
    """Critic updates in generator step `step` (0-based) of a run with this config.json."""
    if config["variant"] == "wgan":
        import wgan  # its warm-up schedule; importing TensorFlow runs nothing on any device
        return wgan.critic_iters(step, config["n_critic"], config["critic_warmup"])
    return config.get("n_critic", 1)  # DCGAN: one discriminator update


def fit_step_cost(rows, config):
    """(unit seconds, first-step overhead) such that step i costs unit * (critic updates + 1), from the
    metrics.jsonl rows of a run that logged every step. The first step also traces the train step: its excess
    over the fit is the overhead. With only one step, all of it is taken as cost (more evaluations, not fewer)."""
    seconds = step_seconds(rows)
    steps = sorted(seconds)
    if not steps or steps[0] != 1 or steps != list(range(1, len(steps) + 1)):
        raise QualityError("the calibration run did not log every step from step 1; is --log_every overridden?")
    elapsed = np.diff([0.0] + [seconds[s] for s in steps])
    units = np.array([critic_updates(config, s - 1) + 1 for s in steps], float)
    if len(steps) == 1:
        return float(elapsed[0] / units[0]), 0.0
    unit = float(elapsed[1:].sum() / units[1:].sum())
    return max(unit, 1e-9), max(0.0, float(elapsed[0] - unit * units[0]))


def predict_steps(config, budget_seconds, unit, overhead=0.0):
    """Generator steps a run with this config reaches with a training-time budget: it stops after the first step
    that ends at or past the budget."""
    t, step = overhead, 0
    while t < budget_seconds and step < 10 ** 7:  # a bound, should the fitted unit be absurdly small
        t += unit * (critic_updates(config, step) + 1)
        step += 1
    return step


def nice_interval(x):
    """The round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten) nearest x, as an int >= 1."""
    if x <= 1:
        return 1
    power = 10 ** math.floor(math.log10(x))
    return max(1, round(min((n * power for n in NICE), key=lambda v: abs(math.log(v / x)))))


def cadence(steps, points):
    """(eval_every, log_every) for about `points` evaluations in `steps` steps, log_every dividing eval_every."""
    eval_every = nice_interval(steps / points)
    return eval_every, math.gcd(eval_every, SCRIPT_LOG_EVERY)


# ------------------------------------------------------------------------------------------- reading runs
def read_jsonl(path):
    """The JSON objects of metrics.jsonl (a line torn by a kill is skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows


def step_seconds(rows):
    """{step: train_seconds} from the rows that carry it (the last line of a step wins)."""
    return {r["step"]: float(r["train_seconds"]) for r in rows if isinstance(r.get("train_seconds"), (int, float))}


def final_grid(run_dir):
    """(step, path) of the run's newest samples/step_NNNNNN.png (written when training ends), or (None, None)."""
    found = []
    samples = os.path.join(run_dir, "samples")
    for name in os.listdir(samples) if os.path.isdir(samples) else []:
        match = re.fullmatch(r"step_(\d+)\.png", name)
        if match:
            found.append((int(match.group(1)), os.path.join(samples, name)))
    return max(found, default=(None, None))


def curve(run_dir, metric, final=None):
    """The run's evaluations as rows {step, train_minutes, <metric>, logged values...}, in step order, plus the
    final checkpoint's score `final` {step, <metric>} if that step was not evaluated in training.

    An evaluation row's time is its own train_seconds, or that of the log line of its step, or interpolated
    between log lines; its logged values are those of the newest log line at or before its step."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise QualityError(f"{run_dir} has no metrics.jsonl; it is not a finished run.")
    rows = read_jsonl(path)
    seconds = step_seconds(rows)
    if not seconds:
        raise QualityError(f"{path} has no train_seconds; it was written by a training script older than the "
                           "--minutes flag.")
    key = f"eval/{metric}"
    scores = {r["step"]: float(r[key]) for r in rows if isinstance(r.get(key), (int, float))}
    extras = {}  # --eval_extra values, e.g. eval/classifier_recall -> column classifier_recall
    for r in rows:
        if r["step"] in scores:
            extras.setdefault(r["step"], {}).update({k[5:]: v for k, v in r.items() if k.startswith("eval/")
                                                     and k != key and isinstance(v, (int, float))})
    if final and final.get("step") is not None and final.get(metric) is not None and final["step"] not in scores:
        scores[final["step"]] = float(final[metric])
    logged = {}
    for r in rows:  # the training log lines: losses and speeds, no eval/ values
        values = {k: v for k, v in r.items() if k not in ("step", "train_seconds") and not k.startswith("eval/")}
        if values:
            logged.setdefault(r["step"], {}).update(values)
    known = sorted(seconds)
    out = []
    for step in sorted(scores):
        t = seconds.get(step, float(np.interp(step, known, [seconds[s] for s in known])))
        before = [s for s in logged if s <= step]
        out.append({"step": step, "train_minutes": t / 60, metric: scores[step],
                    **extras.get(step, {}), **(logged[max(before)] if before else {})})
    return out


# ------------------------------------------------------------------------------------------------- outputs
def write_csv(path, curves, metric):
    """One row per evaluation: run, variant, step, train_minutes, metric, then the logged values."""
    extra = {k for _, _, rows in curves for row in rows for k in row} - {"step", "train_minutes", metric}
    columns = ["run", "variant", "step", "train_minutes", metric]
    columns += [k for k in LOGGED_ORDER if k in extra] + sorted(extra - set(LOGGED_ORDER))
    with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        for label, variant, rows in curves:
            for row in rows:
                writer.writerow({"run": label, "variant": variant,
                                 **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}})


def write_plot(path, curves, metric, eval_samples, devices):
    """<metric> against training minutes, one line per run; False (and no file) if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    values = [row[metric] for _, _, rows in curves for row in rows]
    for label, _, rows in curves:
        if rows:
            ax.plot([r["train_minutes"] for r in rows], [r[metric] for r in rows], marker="o", markersize=4,
                    label=f"{label} ({rows[-1]['step']:,} steps)")
    if values and min(values) > 0:
        ax.set_yscale("log")  # scores fall by orders of magnitude early on; label 1, 2, 5 of each decade
        subs = (1.0, 2.0, 5.0) if max(values) / min(values) > 20 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=subs, numticks=30))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlim(left=0)
    ax.set_xlabel("training minutes (evaluation, sample grids and checkpoints excluded)")
    ax.set_ylabel(f"{metric} of {eval_samples:,} samples (lower is better)")
    ax.set_title(f"{metric} against training time\n" + "; ".join(devices), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True


def write_grids(path, panels, scale, pad=16):
    """panels [(caption, grid PNG path)]: the grids enlarged `scale` times (nearest neighbour), side by side on
    white, each under its caption."""
    font, images = _font(12 + 2 * scale), []
    for caption, grid_path in panels:
        with Image.open(grid_path) as image:
            array = np.asarray(image.convert("RGB"))
        array = np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
        width = max([array.shape[1]] + [math.ceil(font.getlength(text)) for text in caption.split("\n")])
        images.append((caption, array, width))
    line = font.getbbox("Ag")[3] + 4
    caption_height = line * max(caption.count("\n") + 1 for caption, _, _ in images) + pad // 2
    height = caption_height + max(a.shape[0] for _, a, _ in images) + 2 * pad
    canvas = Image.new("RGB", (sum(w for _, _, w in images) + pad * (len(images) + 1), height), "white")
    draw, left = ImageDraw.Draw(canvas), pad
    for caption, array, width in images:
        for i, text in enumerate(caption.split("\n")):
            draw.text((left, pad + i * line), text, fill="black", font=font)
        canvas.paste(Image.fromarray(array), (left, pad + caption_height))
        left += width + pad
    with files.atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def _font(size):
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, OSError):
        return ImageFont.load_default()


def write_outputs(out_dir, manifest, scale):
    """quality.csv, quality.png and samples.png from the finished runs in the manifest; prints what it wrote."""
    metric, curves, panels = manifest["metric"], [], []
    for run in manifest["runs"]:
        run_dir = os.path.join(out_dir, run["name"])
        rows = curve(run_dir, metric, run.get("final"))
        curves.append((run["label"], run["variant"], rows))
        step, grid = final_grid(run_dir)
        if grid:
            last = rows[-1] if rows else {}
            score = f", {metric} {last[metric]:.4g}" if last.get("step") == step else ""
            panels.append((f"{run['label']}\nstep {step:,}, {last.get('train_minutes', 0):.1f} min{score}", grid))
    written = [os.path.join(out_dir, "quality.csv")]
    write_csv(written[0], curves, metric)
    devices = list(dict.fromkeys(run.get("device", "") for run in manifest["runs"] if run.get("device")))
    if write_plot(os.path.join(out_dir, "quality.png"), curves, metric, manifest["eval_samples"], devices):
        written.append(os.path.join(out_dir, "quality.png"))
    else:
        print(f"quality.png not drawn: matplotlib is missing; pip install -r requirements-dev.txt, then "
              f"python experiments/quality.py --out_dir {out_dir} --plot_only")
    if panels:
        written.append(os.path.join(out_dir, "samples.png"))
        write_grids(written[-1], panels, scale)
    print("wrote " + ", ".join(written))
    return written


# ---------------------------------------------------------------------------------------------- the manifest
def read_manifest(out_dir, metric=None, eval_samples=None):
    """quality.json of out_dir, or a new one; refuses to mix metrics or sample counts on one plot."""
    path = os.path.join(out_dir, "quality.json")
    if not os.path.isfile(path):
        if metric is None:
            raise QualityError(f"{out_dir} holds no quality.json; it is not an output directory of quality.py.")
        return {"metric": metric, "eval_samples": eval_samples, "runs": []}
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise QualityError(f"{path} cannot be read ({type(e).__name__}); move it away or choose another "
                           "--out_dir.") from None
    if not isinstance(manifest, dict) or not {"metric", "eval_samples", "runs"} <= manifest.keys():
        raise QualityError(f"{path} was not written by quality.py; move it away or choose another --out_dir.")
    if metric is not None and (manifest["metric"], manifest["eval_samples"]) != (metric, eval_samples):
        raise QualityError(f"{out_dir} holds runs scored by {manifest['metric']} of {manifest['eval_samples']} "
                           f"samples; use the same --metric and --eval_samples there, or another --out_dir.")
    return manifest


def write_manifest(out_dir, manifest):
    with files.atomic_path(os.path.join(out_dir, "quality.json")) as tmp, open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def device_description():
    """CPU model, core count and the SIMD flags that matter for TensorFlow, and any visible NVIDIA GPU."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    text = f"{model or platform.processor() or platform.machine()}, {cores} cores" + \
        (f" ({' '.join(simd)})" if simd else "")
    if shutil.which("nvidia-smi") and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = [g.strip() for g in out.splitlines() if g.strip()]
        if gpus:
            text += "; GPU " + ", ".join(gpus)
    return text


# ------------------------------------------------------------------------------------------------ running
# Parses each run's flags with its script's own parser, in one process, before anything trains: a typo in the
# last run fails now, not after the first two have trained.
_CHECK_FLAGS = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
import common
for label, variant, flags in json.loads(sys.argv[2]):
    sys.argv[0] = variant + ".py"
    try:
        importlib.import_module(variant).parse_args(flags)
    except SystemExit as e:
        if e.code:
            sys.exit(f"(in the run {label!r})")
    except common.RunError as e:
        sys.exit(f"error: {e} (in the run {label!r})")
"""


def check_flags(commands):
    """commands [(label, variant, flags)]; QualityError with the scripts' own message if one is refused."""
    proc = subprocess.run([sys.executable, "-c", _CHECK_FLAGS, ROOT, json.dumps(commands)], env=child_env(),
                          capture_output=True, text=True)
    if proc.returncode:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        message = " ".join(lines[-2:]) if lines else f"exit status {proc.returncode}"
        raise QualityError(f"a run's flags were refused: {message}")


def child_env():
    return dict(os.environ, PYTHONUNBUFFERED="1")


def run_logged(command, log_path):
    """Run a command with its output in log_path; -> its exit status. On Ctrl-C (or SIGTERM) the command gets
    one SIGINT, so that a training script stops after its current step and saves a checkpoint."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        # Its own session: a terminal's Ctrl-C reaches only this process, which passes on exactly one.
        proc = subprocess.Popen(command, env=child_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait()
        except BaseException:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait()
            except BaseException:
                proc.send_signal(signal.SIGINT)  # a second Ctrl-C: the script stops at once
                proc.wait()
            raise


def failed(what, code, log_path):
    with open(log_path) as f:
        lines = [line.strip() for line in f if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    last = (errors or lines or ["(no output)"])[-1]
    return QualityError(f"{what} failed with exit status {code}: {last} (see {log_path})")


def script_command(spec, run_dir, *flags):
    return [sys.executable, os.path.join(ROOT, f"{spec['variant']}.py"), *spec["flags"], "--out_dir", run_dir,
            *map(str, flags)]


def own_flags(spec, args, eval_every, log_every):
    """The flags quality.py adds to a run: budget, evaluation, and --log_every unless the run sets it."""
    budget = ["--minutes", args.minutes, "--steps", NO_LIMIT] if args.minutes else ["--steps", args.steps]
    flags = [*budget, "--eval_every", eval_every, "--eval_samples", args.eval_samples, "--metric", args.metric]
    if getattr(args, "eval_extra", None):
        flags += ["--eval_extra", *args.eval_extra]
    if not any(f.split("=", 1)[0] == "--log_every" for f in spec["flags"]):
        flags += ["--log_every", log_every]
    return flags


def calibrate(spec, args, out_dir):
    """Train briefly in a throwaway directory; -> calibration facts and the predicted steps of the budget."""
    tmp = os.path.join(out_dir, ".calibration", spec["name"])
    shutil.rmtree(tmp, ignore_errors=True)
    log_path = os.path.join(out_dir, "logs", f"{spec['name']}.calibration.log")
    command = script_command(spec, tmp, "--minutes", args.calibration_minutes, "--steps", NO_LIMIT,
                             "--log_every", 1, "--sample_every", NO_LIMIT, "--ckpt_every", NO_LIMIT)
    code = run_logged(command, log_path)
    if code:
        raise failed(f"calibrating {spec['label']!r}", code, log_path)
    with open(os.path.join(tmp, "config.json")) as f:
        config = json.load(f)
    unit, overhead = fit_step_cost(read_jsonl(os.path.join(tmp, "metrics.jsonl")), config)
    shutil.rmtree(tmp, ignore_errors=True)
    predicted = predict_steps(config, args.minutes * 60, unit, overhead)
    return {"unit_seconds": round(unit, 6), "overhead_seconds": round(overhead, 3), "predicted_steps": predicted}


def score_final(run_dir, config, metric, eval_samples, log_path):
    """The newest checkpoint's score by metrics.py, with the evaluations' noise (the run's seed + 1)."""
    command = [sys.executable, os.path.join(ROOT, "metrics.py"), run_dir, "--num", str(eval_samples), "--seed",
               str(config["seed"] + 1), "--metric", metric]
    code = run_logged(command, log_path)
    if code:
        raise failed(f"scoring {run_dir}", code, log_path)
    with open(log_path) as f:
        for line in f:
            if line.startswith(f"{metric}: "):  # "name: value  (network, counts)"
                return float(line.split(":", 1)[1].split()[0])
    raise QualityError(f"metrics.py printed no {metric} for {run_dir} (see {log_path})")


def train(spec, args, out_dir, device):
    """Calibrate (with --minutes), train with evaluation, score the final checkpoint; -> the manifest entry."""
    run_dir, started = os.path.join(out_dir, spec["name"]), time.perf_counter()
    calibration = None
    if args.minutes:
        print(f"{spec['label']}: calibrating the evaluation interval ({args.calibration_minutes:g} training "
              "minutes) ...", flush=True)
        calibration = calibrate(spec, args, out_dir)
        eval_every, log_every = cadence(calibration["predicted_steps"], args.points)
        print(f"{spec['label']}: {calibration['unit_seconds'] * 1000:.1f} ms per network update, about "
              f"{calibration['predicted_steps']:,} steps in {args.minutes:g} minutes: evaluating every "
              f"{eval_every:,} steps", flush=True)
    else:
        eval_every, log_every = cadence(args.steps, args.points)
    log_path = os.path.join(out_dir, "logs", f"{spec['name']}.log")
    command = script_command(spec, run_dir, *own_flags(spec, args, eval_every, log_every))
    budget = f"{args.minutes:g} training minutes" if args.minutes else f"{args.steps:,} steps"
    print(f"{spec['label']}: training for {budget} (log: {log_path})", flush=True)
    code = run_logged(command, log_path)
    if code:
        raise failed(f"training {spec['label']!r}", code, log_path)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    rows = curve(run_dir, args.metric)
    step = final_grid(run_dir)[0] or max(step_seconds(read_jsonl(os.path.join(run_dir, "metrics.jsonl"))))
    if rows and rows[-1]["step"] == step:
        final = {"step": step, args.metric: rows[-1][args.metric]}
    else:
        value = score_final(run_dir, config, args.metric, args.eval_samples,
                            os.path.join(out_dir, "logs", f"{spec['name']}.final.log"))
        final = {"step": step, args.metric: value}
    entry = {"label": spec["label"], "variant": spec["variant"], "flags": spec["flags"], "name": spec["name"],
             "budget": {"minutes": args.minutes} if args.minutes else {"steps": args.steps},
             "eval_every": eval_every, "calibration": calibration, "final": final,
             "wall_minutes": round((time.perf_counter() - started) / 60, 2), "device": device,
             "command": shlex.join(["python", f"{spec['variant']}.py", *spec["flags"], "--out_dir", run_dir,
                                    *map(str, own_flags(spec, args, eval_every, log_every))])}
    print(f"{spec['label']}: {args.metric} {final[args.metric]:.4g} at step {step:,} "
          f"({entry['wall_minutes']:.1f} minutes in all)", flush=True)
    return entry


def main(argv=None):
    args = parse_args(argv)
    out_dir = args.out_dir
    if args.plot_only:
        write_outputs(out_dir, read_manifest(out_dir), args.scale)
        return
    manifest = read_manifest(out_dir, args.metric, args.eval_samples)
    for spec in args.run_specs:
        if os.path.exists(os.path.join(out_dir, spec["name"])):
            raise QualityError(f"{os.path.join(out_dir, spec['name'])} already exists; give the run "
                               f"{spec['label']!r} another --label, or remove that directory.")
    placeholder = os.path.join(out_dir, ".check")
    check_flags([(s["label"], s["variant"], s["flags"] + ["--out_dir", placeholder] +
                  [str(f) for f in own_flags(s, args, 1, 1)]) for s in args.run_specs])
    device = device_description()
    print(f"{len(args.run_specs)} run(s) into {out_dir} on {device}", flush=True)
    for spec in args.run_specs:
        previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM too stops the script with a checkpoint
        try:
            entry = train(spec, args, out_dir, device)
        except KeyboardInterrupt:
            run_dir = os.path.join(out_dir, spec["name"])
            kept = f"it stopped with a checkpoint in {run_dir} (remove that to run it again)" \
                if os.path.exists(run_dir) else "it had not started training"
            done = f"the finished runs are in {out_dir}" if manifest["runs"] else "no run had finished"
            print(f"interrupted during {spec['label']!r}: {kept}; {done}.", file=sys.stderr)
            sys.exit(130)
        finally:
            signal.signal(signal.SIGTERM, previous)
        manifest["runs"].append(entry)
        write_manifest(out_dir, manifest)
        write_outputs(out_dir, manifest, args.scale)  # after every run, so a long experiment shows progress
    shutil.rmtree(os.path.join(out_dir, ".calibration"), ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        main()
    except QualityError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

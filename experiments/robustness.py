"""WGAN-GP Fig. 2 in miniature: which variants train which architectures, on Fashion-MNIST at 32x32.

Gulrajani et al. 2017, section 5.2 (and WGAN section 4.3, Figs. 5-7): the same generator/critic pairs trained with
each method's paper settings; the standard GAN fails on the harder ones (garbage or mode collapse), WGAN-GP trains
all of them. Rows are architectures (--arch of the scripts, ops.py), columns the three scripts with their own
defaults (Adam 2e-4 / 0.5, batch 128 for DCGAN; RMSProp 5e-5, clip 0.01, n_critic 5 for WGAN; Adam 1e-4 / (0, 0.9),
lambda 10, n_critic 5, layer norm in the critic for WGAN-GP); only the budget is this experiment's.

    python experiments/robustness.py                          # 5 rows x 3 columns, 5 training minutes each (~90 min)
    python experiments/robustness.py --rows mlp_g --out_dir runs/robustness   # one row, added to that figure
    python experiments/robustness.py --steps 2000             # a step budget instead of minutes
    python experiments/robustness.py --quick --data_dir DIR   # the smallest run of every cell, for tests

Each run is the script's own main(argv) in this process (python dcgan.py --arch ROW ...), into OUT_DIR/ROW-COLUMN/;
a cell whose run has finished is not trained again, so rows can be run one at a time and the figure is redrawn
from every finished cell. Every finished run is scored on --eval_samples samples (noise seed = run seed + 1) in
the offline classifier's feature space (metrics.py): classifier_fd, precision, recall (k 5) and the classes the
samples cover, against 10,000 training images. Written into OUT_DIR:
    robustness.png   the cells' final fixed-noise sample grids, rows = architectures, columns = variants
    robustness.csv   budget, row, column, steps, train_minutes and the scores, one line per cell (the runs of
                     several budgets append into one long CSV, docs/robustness.csv)
    robustness.md    the same as a markdown table
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import dcgan  # noqa: E402
import files  # noqa: E402
import metrics  # noqa: E402
import wgan  # noqa: E402
import wgan_gp  # noqa: E402

ROWS = ("dcgan", "nobn_g", "mlp_g", "no_norm", "tanh")  # Fig. 2's rows that these scripts have (not gated, ResNet)
COLUMNS = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp}
ROW_TITLES = {"dcgan": "DCGAN G and D", "nobn_g": "G: no BN, constant filters", "mlp_g": "G: 4-layer 512 ReLU MLP",
              "no_norm": "no normalisation in G or D", "tanh": "tanh nonlinearities"}
SCORES = ("classifier_fd", "classifier_precision", "classifier_recall", "classes")
QUICK = ["--width", "8", "--batch_size", "16", "--z_dim", "16", "--log_every", "1"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="architectures (--arch), default all five")
    add("--columns", nargs="+", choices=tuple(COLUMNS), default=list(COLUMNS), help="variants, default all three")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None,
                        help="training minutes per cell (default 5: 15 cells and their scoring fit 90 minutes on "
                             "the 2-core development CPU)")
    budget.add_argument("--steps", type=int, default=None, help="generator steps per cell instead")
    add("--eval_samples", type=int, default=5000, help="samples scored per cell")
    add("--dataset", default="fashion_mnist", choices=metrics.LABELLED, help="training images (labelled)")
    add("--data_dir", default=None, help="where the dataset's files are (default: the usual place)")
    add("--seed", type=int, default=0, help="every cell's --seed")
    add("--out_dir", default=None, help="output directory (default runs/robustness-<time>); cells accumulate in it")
    add("--quick", action="store_true",
        help="tiny networks, 2 steps per cell, 64 samples: checks the machinery, not the claim")
    add("--plot_only", action="store_true", help="train nothing: redraw the figure and tables from OUT_DIR")
    args = parser.parse_args(argv)
    if args.minutes is None and args.steps is None:
        args.steps, args.minutes = (2, 0) if args.quick else (None, 5.0)
    if args.quick:
        args.eval_samples = min(args.eval_samples, 64)
    args.out_dir = args.out_dir or os.path.join("runs", f"robustness-{time.strftime('%Y%m%d-%H%M%S')}")
    return args


def cell_argv(args, row, column, run_dir):
    """The script's command line for one cell: its own defaults, the row's --arch, the budget."""
    argv = ["--arch", row, "--dataset", args.dataset, "--image_size", "32", "--seed", str(args.seed),
            "--out_dir", run_dir, "--ckpt_every", "100000", "--sample_every", "100000"]
    argv += ["--data_dir", args.data_dir] if args.data_dir else []
    argv += ["--steps", str(args.steps)] if args.steps else ["--minutes", str(args.minutes), "--steps", "10000000"]
    argv += QUICK if args.quick else []
    argv += ["--no-critic_warmup"] if args.quick and column == "wgan" else []
    return argv


def train_cell(args, row, column):
    """Train one cell unless it has finished before; -> its run directory."""
    run_dir = os.path.join(args.out_dir, f"{row}-{column}")
    if os.path.isfile(os.path.join(run_dir, "result.json")):
        print(f"{row} x {column}: done before ({run_dir})", flush=True)
        return run_dir
    if os.path.exists(run_dir):  # an interrupted cell: continue it with its own flags
        argv = ["--resume", run_dir]
    else:
        argv = cell_argv(args, row, column, run_dir)
    print(f"{row} x {column}: python {column}.py {' '.join(argv)}", flush=True)
    COLUMNS[column].main(argv)
    return run_dir


def score_cell(args, run_dir, scorer):
    """Score the run's newest checkpoint; write and return its result.json."""
    generator, config, path = common.load_generator(run_dir)
    images = common.generate_images(generator, args.eval_samples, config["z_dim"], config["seed"] + 1)
    values = scorer(images)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    seconds = max((r.get("train_seconds", 0.0) for r in rows), default=0.0)
    result = {"budget": budget(config), "row": config["arch"], "column": config["variant"],
              "steps": int(path.rsplit("-", 1)[1]),
              "train_minutes": round(seconds / 60, 2), "samples": len(images),
              **{k: round(v, 4) for k, v in values.items()}, "notes": scorer.notes}
    files.write_text(os.path.join(run_dir, "result.json"), json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def budget(config):
    """A cell's budget as the CSV names it: "5 min" (--minutes) or "2000 steps"; it tells the runs of one long CSV
    apart."""
    return f"{config['minutes']:g} min" if config.get("minutes") else f"{config['steps']} steps"


def final_grid(run_dir):
    samples = os.path.join(run_dir, "samples")
    names = sorted(n for n in os.listdir(samples) if n.startswith("step_")) if os.path.isdir(samples) else []
    return os.path.join(samples, names[-1]) if names else None


def write_outputs(out_dir):
    """robustness.png/.csv/.md from every finished cell in out_dir."""
    results = {}
    for row in ROWS:
        for column in COLUMNS:
            path = os.path.join(out_dir, f"{row}-{column}", "result.json")
            if os.path.isfile(path):
                with open(path) as f:
                    results[row, column] = json.load(f)
    if not results:
        raise common.RunError(f"{out_dir} holds no finished cell.")
    columns = ["budget", "row", "column", "steps", "train_minutes", "samples", "classifier_fd", "classifier_precision",
               "classifier_recall", "classes", "classes_kl"]
    with files.atomic_write(os.path.join(out_dir, "robustness.csv"), "w") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results.values())
    header = ["architecture", "variant", "steps", "train min", "classifier_fd", "precision", "recall",
              "classes (of 10)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results.values():
        lines.append(f"| {r['row']} | {r['column']} | {r['steps']:,} | {r['train_minutes']:.1f} | "
                     f"{r['classifier_fd']:.1f} | {r['classifier_precision']:.3f} | {r['classifier_recall']:.3f} | "
                     f"{r['classes']} |")
    first = next(iter(results.values()))
    lines.append(f"\n{first['samples']} samples per cell; {first['notes']['classifier_precision']}.")
    files.write_text(os.path.join(out_dir, "robustness.md"), "\n".join(lines) + "\n")
    rows = [r for r in ROWS if any((r, c) in results for c in COLUMNS)]
    columns = [c for c in COLUMNS if any((r, c) in results for r in ROWS)]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.6 * len(columns) + 1.6, 2.7 * len(rows)),
                             squeeze=False, dpi=110)
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            grid = final_grid(os.path.join(out_dir, f"{row}-{column}")) if (row, column) in results else None
            if grid:
                with Image.open(grid) as image:
                    ax.imshow(np.asarray(image.convert("L")), cmap="gray", vmin=0, vmax=255)
                r = results[row, column]
                ax.set_xlabel(f"FD {r['classifier_fd']:.0f}  P {r['classifier_precision']:.2f}  "
                              f"R {r['classifier_recall']:.2f}  {r['classes']} cl.", fontsize=7)
            if i == 0:
                ax.set_title(f"{column}.py", fontsize=10)
            if j == 0:
                ax.set_ylabel(ROW_TITLES[row], fontsize=8)
    fig.tight_layout()
    with files.atomic_path(os.path.join(out_dir, "robustness.png")) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return results


def main(argv=None):
    args = parse_args(argv)
    if not args.plot_only:
        scorer = metrics.make_scorer(list(SCORES), args.dataset, args.data_dir, 32, 1)  # classifier trained once
        for row in args.rows:
            for column in args.columns:
                run_dir = train_cell(args, row, column)
                if not os.path.isfile(os.path.join(run_dir, "result.json")):
                    result = score_cell(args, run_dir, scorer)
                    print(f"{row} x {column}: " + ", ".join(f"{k} {result[k]:.4g}" for k in
                                                            ("classifier_fd", "classifier_precision",
                                                             "classifier_recall", "classes")), flush=True)
    write_outputs(args.out_dir)
    print(f"wrote robustness.png, robustness.csv and robustness.md into {args.out_dir}")


if __name__ == "__main__":
    common.cli(main)

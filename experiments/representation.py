"""DCGAN sections 5.1-5.2 in miniature: is a GAN's critic, trained without labels, a feature learner?

Radford et al. 2015 take the discriminator's convolutional features from every layer, max-pool each layer's output
to a 4x4 grid, flatten and concatenate them, and train a regularised linear L2-SVM on top: 82.8% on CIFAR-10
(Table 1), and 22.48% test error on SVHN with 1,000 labels against 28.87% for a supervised CNN of the same
architecture (Table 2). This script measures the same for runs of dcgan.py, wgan.py and wgan_gp.py, side by side,
on Fashion-MNIST or MNIST (IDX labels) or CIFAR-10 (its batches' labels), with three baselines in the same table:
the same critic architecture at its initialisation (random features, same pooling), raw pixels, and the same
architecture trained supervised on the labelled images only.

    python experiments/representation.py runs/dcgan-fashion_mnist-20261127-120000 runs/wgan-... runs/wgan_gp-...
    python experiments/representation.py RUN [RUN ...] --labels_per_class 10 100 1000 all \\
        --csv representation.csv --plot representation.png
    python experiments/representation.py RUN --best           # each run's best checkpoint (ckpt_best/)
    python experiments/representation.py tests/fixtures/dcgan_run --data_dir TINY_FASHION_DIR --val_size 16 \\
        --labels_per_class 1 all --classifier_steps 20 --supervised_steps 4     # tests' tiny data, seconds

Features. Every convolutional layer of the critic, found by walking the network (so every --arch works), gives
its output after the normalisation and nonlinearity that follow it, as the DCGAN authors' SVHN code takes them
(lrelu(batchnorm(conv))), in inference mode; each is max-pooled to a 4x4 grid (maps of 4x4 or smaller are kept),
flattened, and all are concatenated: 16 x (64 + 128 + 256) = 7,168 features for the default 32x32 critic.

Protocol. A fixed part of the training split, --val_size images (10,000, the paper's SVHN protocol) drawn with
--seed, is the validation set: it chooses the linear classifier's L2 weight from L2S and stops the supervised
baseline early. The labelled images are drawn from the rest of the training split, --labels_per_class of every
class (stratified, seeded by --seed and the run's seed; each smaller draw is part of every larger one); `all` is
the whole rest. The test split gives the reported accuracies and nothing else. Features are standardised with the
mean and standard deviation of the labelled images.

Classifier: multinomial logistic regression, where the paper used a linear L2-SVM. Both are linear and L2
regularised; logistic regression is one smooth convex problem per L2 weight, with one optimum, and trains with
this project's TensorFlow (Adam, cosine-decayed, full batch up to 1,024 labelled images, mini-batches above), all
L2 weights at once as one wide linear layer. The baselines: the run's critic architecture built by ops.make_critic
from its config.json and initialised with the run's seed; raw pixels in [-1, 1]; and that architecture with a
10-way head in place of its score, trained on the labelled images (Adam 1e-3, batch 64, at most --supervised_steps
steps and 100 epochs), keeping the weights of its best validation accuracy (checked every 100 steps, stopped
after 3 checks without improvement). Runs with the same critic architecture and seed share their baselines.

Output: a markdown table on stdout (test accuracy in %, mean +- standard deviation over the runs' seeds), --csv
(one line per features, seed and labels per class, with the chosen L2 weight) and --plot (accuracy against labels
per class). docs/representation.md shows the measured study.
"""
import argparse
import csv
import io
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import data  # noqa: E402
import devices  # noqa: E402
import files  # noqa: E402
import metrics  # noqa: E402
import ops  # noqa: E402

CLASSES = 10
GRID = 4  # each layer's output is max-pooled to GRID x GRID (section 5.1)
L2S = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the classifier's L2 weights; the validation set picks one
LINEAR_LR, LINEAR_BATCH = 1e-2, 1024
SUPERVISED_LR, SUPERVISED_BATCH, SUPERVISED_EPOCHS = 1e-3, 64, 100
CHECK_EVERY, PATIENCE = 100, 3  # the supervised baseline's validation checks (steps) and stop after this many
# Layers that act on each position of a conv's output alone: a conv layer's features are taken after them.
PER_POSITION = (keras.layers.BatchNormalization, ops.LayerNorm, keras.layers.Activation, keras.layers.LeakyReLU,
                keras.layers.ReLU)
KINDS = {"trained": "trained critic", "random": "critic at initialisation", "supervised": "supervised network",
         "pixels": "raw pixels"}


def labels_arg(value):
    if value == "all":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a positive number nor 'all'")
    return int(value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("runs", nargs="+", metavar="RUN_DIR", help="run directories of dcgan.py, wgan.py, wgan_gp.py (one dataset)")
    add("--best", action="store_true", help="each run's best checkpoint (ckpt_best/) instead of its newest")
    add("--labels_per_class", nargs="+", type=labels_arg, default=[100, "all"], metavar="N",
        help="labelled training images per class, or all (the whole training split outside the validation set)")
    add("--val_size", type=int, default=10_000, help="training images set aside as the validation set")
    add("--seed", type=int, default=0, help="seeds the validation split, and with each run's seed the label draw")
    add("--data_dir", default=None, help="where the dataset's IDX files are (default: each run's own)")
    add("--classifier_steps", type=int, default=300, help="Adam steps of the linear classifier")
    add("--supervised_steps", type=int, default=600, help="at most this many steps of the supervised baseline")
    add("--batch_size", type=int, default=500, help="images per critic call when extracting features")
    add("--csv", default=None, help="write the results here, one line per features, seed and labels per class")
    add("--plot", default=None, help="draw test accuracy against labels per class here (PNG)")
    args = parser.parse_args(argv)
    for name in ("val_size", "classifier_steps", "supervised_steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    args.labels_per_class = sorted(set(args.labels_per_class), key=lambda k: math.inf if k == "all" else k)
    return args


# ------------------------------------------------------------------------------------------------ the data
def load_data(dataset, data_dir, image_size, channels, fit):
    """(train images, train labels, test images, test labels) at a run's geometry; one sentence for a dataset
    without labels. (Fashion-)MNIST's labels come from their IDX files, CIFAR-10's from its batches through
    data.py's restricted unpickler."""
    if dataset not in (*metrics.LABELLED, "cifar10"):
        raise common.RunError(f"a {dataset} run has no labels to classify; use fashion_mnist, mnist or cifar10 runs.")
    out = []
    for split in ("train", "test"):
        images = data.load_images(dataset, data_dir, image_size, channels, split, fit=fit)
        labels = (data.read_cifar10_labels(data_dir, split) if dataset == "cifar10" else
                  metrics.read_labels(dataset, data_dir, split)).astype(np.int64)
        if len(images) != len(labels):
            raise data.DataError(f"The {dataset} {split} images and labels differ in number ({len(images)} and "
                                 f"{len(labels)}); re-download them.")
        out += [images, labels]
    return out


def split_train(n, val_size, seed):
    """(validation indices, the rest) of n training images: a fixed part of val_size images, drawn with seed."""
    if val_size >= n:
        raise common.RunError(f"--val_size {val_size} leaves no labelled images of the {n} training images; use "
                              f"fewer than {n}.")
    order = np.random.default_rng([seed, 1]).permutation(n)
    return np.sort(order[:val_size]), np.sort(order[val_size:])


def draw_labelled(labels, pool, per_class, seed):
    """Sorted indices of per_class images of every class drawn from pool (all of pool for 'all'). Each class's
    images come in one order seeded by (seed, class), so a smaller draw is part of every larger one."""
    if per_class == "all":
        return pool
    chosen = []
    for c in np.unique(labels):
        members = pool[labels[pool] == c]
        if len(members) < per_class:
            raise common.RunError(f"--labels_per_class {per_class} needs {per_class} images of class {c}, but the "
                                  f"training split has {len(members)} outside the validation set; ask for fewer.")
        chosen.append(np.random.default_rng([*np.atleast_1d(seed), c]).permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


# -------------------------------------------------------------------------------------------- the features
def build_critic(config):
    return ops.make_critic(config["image_size"], config["channels"], config["width"], norm=config["norm"],
                           arch=config["arch"])


def load_critic(run_dir, best=False):
    """Rebuild a run's critic from config.json and restore its weights (as common.load_generator does the
    generator); returns (critic, config, checkpoint path)."""
    config = common.saved_flags(run_dir)
    path = common.checkpoint_path(run_dir, best=best)
    critic = build_critic(config)
    common.restore_network(path, "critic", critic)
    return critic, config, path


def initial_critic(config):
    """The run's critic architecture, initialised from the run's seed (a draw of its initialisation)."""
    keras.utils.set_random_seed(config["seed"])
    return build_critic(config)


def feature_outputs(network):
    """The output of every Conv2D layer of a Keras functional network, each followed through the per-position
    layers (normalisation, nonlinearity) that alone consume it, in the network's layer order."""
    consumers = {}
    for layer in network.layers:
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        for tensor in inputs:
            consumers.setdefault(id(tensor), []).append(layer)
    outputs = []
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output
            while len(consumers.get(id(out), [])) == 1 and isinstance(consumers[id(out)][0], PER_POSITION):
                out = consumers[id(out)][0].output
            outputs.append(out)
    return outputs


def max_pool_grid(x, grid=GRID):
    """[B, H, H, C] -> [B, grid, grid, C]: the maximum over each cell of a grid x grid partition, cell i spanning
    rows (and columns) floor(i H / grid) to ceil((i + 1) H / grid), as PyTorch's AdaptiveMaxPool2d (for H a
    multiple of grid, plain max pooling). Maps of grid x grid or smaller are kept as they are."""
    size = x.shape[1]
    if size <= grid:
        return x
    cells = [(i * size // grid, -(-(i + 1) * size // grid)) for i in range(grid)]
    x = tf.stack([tf.reduce_max(x[:, a:b], axis=1) for a, b in cells], axis=1)
    return tf.stack([tf.reduce_max(x[:, :, a:b], axis=2) for a, b in cells], axis=2)


def feature_extractor(network, batch_size=500):
    """-> features(uint8 images [N, H, W, C]) -> float32 [N, D]: every conv layer's output (feature_outputs),
    max-pooled to a 4x4 grid, flattened and concatenated; inference mode (BatchNorm's moving statistics)."""
    body = keras.Model(network.input, feature_outputs(network))

    @tf.function(input_signature=[tf.TensorSpec([None, *network.input.shape[1:]], tf.uint8)])
    def run(images):
        maps = body(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)  # the training scripts' scaling
        maps = maps if isinstance(maps, (list, tuple)) else [maps]
        return tf.concat([tf.reshape(max_pool_grid(m), [tf.shape(m)[0], -1]) for m in maps], axis=1)

    def features(images):
        return np.concatenate([run(images[i:i + batch_size]).numpy() for i in range(0, len(images), batch_size)])
    return features


def pixels(images):
    return images.reshape(len(images), -1).astype(np.float32) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------- classifiers
def mean_std(x, chunk=4096):
    """Per-feature mean and standard deviation (1 where a feature is constant), in chunks: no copy of x."""
    total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        block = x[i:i + chunk].astype(np.float64)
        total += block.sum(0)
        squares += np.square(block).sum(0)
    mean = total / len(x)
    std = np.sqrt(np.maximum(squares / len(x) - mean ** 2, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def fit_linear(x, y, x_val, y_val, steps=300, l2s=L2S, seed=0):
    """Multinomial logistic regression on standardised features, minimising mean cross-entropy + l2 / 2 |W|^2
    for every l2 in l2s at once (one [D, len(l2s) x classes] weight matrix: the problems are separate, and one
    read of a batch serves them all). -> (predict(features) -> labels with the chosen l2, chosen l2, validation
    accuracy of each l2)."""
    mean, std = mean_std(x)
    d, m = x.shape[1], len(l2s)
    w, b = tf.Variable(tf.zeros([d, m * CLASSES])), tf.Variable(tf.zeros([m * CLASSES]))
    l2 = tf.constant(np.repeat(l2s, CLASSES), tf.float32)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(LINEAR_LR, steps))

    @tf.function(input_signature=[tf.TensorSpec([None, d], tf.float32)])
    def logits(features):  # [B, D] -> [B, len(l2s), classes]
        return tf.reshape(((features - mean) / std) @ w + b, [-1, m, CLASSES])

    @tf.function
    def step(features, labels):
        with tf.GradientTape() as tape:
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.repeat(labels[:, None], m, axis=1),
                                                                logits(features))
            loss = tf.reduce_sum(tf.reduce_mean(ce, 0)) + 0.5 * tf.reduce_sum(l2 * tf.reduce_sum(tf.square(w), 0))
        optimizer.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))

    rng, batch = np.random.default_rng(seed), min(len(x), LINEAR_BATCH)
    order = np.zeros(0, np.int64)
    for _ in range(steps):
        if batch == len(x):
            step(x, y)
            continue
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(len(x))])
        idx, order = np.sort(order[:batch]), order[batch:]
        step(x[idx], y[idx])

    def predict_all(features, chunk=2048):
        return np.concatenate([np.argmax(logits(features[i:i + chunk]).numpy(), -1)
                               for i in range(0, len(features), chunk)])
    val_accuracy = (predict_all(x_val) == y_val[:, None]).mean(0)
    best = int(np.argmax(val_accuracy[::-1]))  # ties go to the stronger regularisation
    best = m - 1 - best
    return (lambda features: predict_all(features)[:, best]), l2s[best], val_accuracy


def supervised_network(config):
    """The run's critic architecture (initialised from its seed) with a 10-way head in place of its score."""
    critic = initial_critic(config)
    return keras.Model(critic.input, keras.layers.Dense(CLASSES, name="head")(critic.layers[-2].output))


def predictor(network, batch_size=500):
    run = tf.function(lambda images: tf.argmax(network(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False),
                                               -1))
    return lambda images: np.concatenate([run(images[i:i + batch_size]).numpy()
                                          for i in range(0, len(images), batch_size)])


def train_supervised(config, x, y, x_val, y_val, max_steps, seed=0):
    """Train supervised_network on the labelled images only (Adam, cross-entropy), checking the validation
    accuracy every CHECK_EVERY steps and stopping after PATIENCE checks without a gain; at most max_steps steps
    and SUPERVISED_EPOCHS epochs. -> (predict(images) -> labels with the best weights, their step, their
    validation accuracy, the step cap)."""
    network = supervised_network(config)
    optimizer = keras.optimizers.Adam(SUPERVISED_LR)
    batch = min(len(x), SUPERVISED_BATCH)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            out = network(tf.cast(images, tf.float32) / 127.5 - 1.0, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, out))
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables))

    predict, rng = predictor(network), np.random.default_rng(seed)
    steps = min(max_steps, SUPERVISED_EPOCHS * (len(x) // batch))
    best, order = (-1.0, 0, None), np.zeros(0, np.int64)
    for i in range(1, steps + 1):
        if len(order) < batch:  # whole epochs in a seeded order; a last partial batch waits for the next epoch
            order = np.concatenate([order, rng.permutation(len(x))])
        idx, order = np.sort(order[:batch]), order[batch:]
        step(x[idx], y[idx])
        if i % CHECK_EVERY == 0 or i == steps:
            accuracy = float((predict(x_val) == y_val).mean())
            if accuracy > best[0]:
                best = (accuracy, i, network.get_weights())
            elif i - best[1] >= PATIENCE * CHECK_EVERY:
                break
    network.set_weights(best[2])
    return predict, best[1], best[0], steps


# ------------------------------------------------------------------------------------------------ the study
def probe(extract, images, labels, test, val, draws, args, seed):
    """The linear classifier on extract's features, at every draw of labelled images -> [record]."""
    largest = draws[args.labels_per_class[-1]]  # each smaller draw is part of it: its features serve them all
    train_features, val_features = extract(images[largest]), extract(images[val])
    test_features = extract(test[0])
    records = []
    for k in args.labels_per_class:
        rows = np.searchsorted(largest, draws[k])
        x = train_features if len(rows) == len(largest) else train_features[rows]
        predict, l2, val_accuracy = fit_linear(x, labels[draws[k]], val_features, labels[val],
                                               args.classifier_steps, seed=seed)
        records.append(dict(labels_per_class=k, labels=len(rows), l2=l2, val_accuracy=float(val_accuracy.max()),
                            test_accuracy=float((predict(test_features) == test[1]).mean())))
    return records


def supervised(config, images, labels, test, val, draws, args, seed):
    """The supervised baseline at every draw of labelled images -> [record]."""
    records = []
    for k in args.labels_per_class:
        predict, step, val_accuracy, cap = train_supervised(config, images[draws[k]], labels[draws[k]],
                                                            images[val], labels[val], args.supervised_steps, seed)
        records.append(dict(labels_per_class=k, labels=len(draws[k]), best_step=step, capped=step == cap,
                            val_accuracy=val_accuracy, test_accuracy=float((predict(test[0]) == test[1]).mean())))
    return records


def study(args):
    """Every run's trained critic and the baselines its critic architecture and seed need -> [record]."""
    runs = [load_critic(run_dir, args.best) for run_dir in args.runs]  # every run is checked before the long work
    datasets = sorted({config["dataset"] for _, config, _ in runs})
    if len(datasets) > 1:
        raise common.RunError(f"the runs were trained on different datasets ({', '.join(datasets)}); compare runs "
                              "of one dataset.")
    results, done, loaded = [], set(), {}
    for run_dir, (critic, config, path) in zip(args.runs, runs):
        geometry = (config["image_size"], config["channels"], config["fit"])
        if geometry not in loaded:
            loaded[geometry] = load_data(config["dataset"], args.data_dir or config.get("data_dir"), *geometry)
        images, labels, test_images, test_labels = loaded[geometry]
        val, pool = split_train(len(labels), args.val_size, args.seed)
        seed = config["seed"]
        draws = {k: draw_labelled(labels, pool, k, (args.seed, seed)) for k in args.labels_per_class}
        arch = "" if config["arch"] == "dcgan" else f" --arch {config['arch']}"
        critic_name = f"{config['arch']} critic, {config['norm']} norm, width {config['width']}"
        jobs = [("trained", f"{config['variant']}.py{arch}", lambda: feature_extractor(critic, args.batch_size)),
                ("random", critic_name, lambda: feature_extractor(initial_critic(config), args.batch_size)),
                ("supervised", critic_name, None),
                ("pixels", f"{config['image_size']}x{config['image_size']}x{config['channels']}", lambda: pixels)]
        for kind, network, make in jobs:
            key = (kind, network, seed, geometry)
            if key in done and kind != "trained":
                continue  # a baseline another run of the same critic architecture and seed has measured
            done.add(key)
            started = time.perf_counter()
            test = (test_images, test_labels)
            records = (supervised(config, images, labels, test, val, draws, args, seed) if kind == "supervised"
                       else probe(make(), images, labels, test, val, draws, args, seed))
            name = os.path.basename(os.path.normpath(run_dir)) if kind == "trained" else ""
            results += [dict(run=name, features=kind, network=network, seed=seed, **r) for r in records]
            print(f"{KINDS[kind]}, {network}, seed {seed} ({path if kind == 'trained' else 'baseline'}): "
                  + ", ".join(f"{label(r['labels_per_class'])} {r['test_accuracy']:.2%}"
                              + (f" (best step {r['best_step']})" if "best_step" in r else "") for r in records)
                  + f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return results


# ------------------------------------------------------------------------------------------------ the output
def label(labels_per_class):
    return "all labels" if labels_per_class == "all" else f"{labels_per_class} per class"


def grouped(results):
    """{(features, network): {labels_per_class: {seed: test accuracy}}}, trained critics first."""
    groups = {}
    for r in sorted(results, key=lambda r: list(KINDS).index(r["features"])):
        groups.setdefault((r["features"], r["network"]), {}).setdefault(r["labels_per_class"], {})[r["seed"]] = \
            r["test_accuracy"]
    return groups


def mean_spread(values):
    """Accuracy in %: the mean, +- the standard deviation over seeds when there are several."""
    values = 100 * np.asarray(values)
    return f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else "")


def table(results, labels_per_class):
    """A markdown table: one row per features and network, one column per labels per class."""
    everything = next((r["labels"] for r in results if r["labels_per_class"] == "all"), None)
    header = ["features", "network", "seeds"] + [f"all ({everything:,} labels)" if k == "all" else label(k)
                                                 for k in labels_per_class]
    capped = {(r["features"], r["network"], r["labels_per_class"]) for r in results if r.get("capped")}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (kind, network), by_k in grouped(results).items():
        seeds = sorted({s for accuracies in by_k.values() for s in accuracies})
        cells = [(mean_spread(list(by_k[k].values())) + (" *" if (kind, network, k) in capped else ""))
                 if k in by_k else "" for k in labels_per_class]
        lines.append(f"| {KINDS[kind]} | {network} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    lines.append("\nTest accuracy (%), mean ± standard deviation over the seeds."
                 + (" *: the supervised network's best validation accuracy came at its last allowed step "
                    "(--supervised_steps or 100 epochs), so more steps may raise it." if capped else ""))
    return "\n".join(lines)


CSV_COLUMNS = ["run", "features", "network", "seed", "labels_per_class", "labels", "l2", "best_step",
               "val_accuracy", "test_accuracy"]


def write_csv(results, path):
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow({**r, **{k: f"{r[k]:.4f}" for k in ("val_accuracy", "test_accuracy")}})
    files.write_text(path, out.getvalue())


def plot(results, path, labels_per_class):
    """Test accuracy against labelled images per class (log scale), one line per features and network."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    everything = next((r["labels"] / CLASSES for r in results if r["labels_per_class"] == "all"), None)
    where = {k: everything if k == "all" else k for k in labels_per_class}
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    styles, colours = {"trained": "-", "random": "--", "supervised": ":", "pixels": "-."}, {}
    for (kind, network), by_k in grouped(results).items():
        ks = [k for k in labels_per_class if k in by_k]
        values = [100 * np.array(list(by_k[k].values())) for k in ks]
        colour = "0.45" if kind == "pixels" else colours.setdefault(network, f"C{len(colours)}")
        seeds = len({s for accuracies in by_k.values() for s in accuracies})
        ax.errorbar([where[k] for k in ks], [v.mean() for v in values],
                    yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in values], color=colour, linestyle=styles[kind],
                    marker="o", markersize=4, capsize=3,
                    label=f"{KINDS[kind]}: {network} ({seeds} seed{'s' if seeds > 1 else ''})")
    ax.set_xscale("log")
    ax.set_xticks(list(where.values()), [f"all\n(≈{everything:,.0f})" if k == "all" else str(k) for k in where])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with files.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    devices.set_precision("fp32")  # the features and the classifiers in float32, whatever the runs trained in
    started = time.perf_counter()
    results = study(args)
    print(table(results, args.labels_per_class))
    if args.csv:
        write_csv(results, args.csv)
    if args.plot:
        plot(results, args.plot, args.labels_per_class)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} minutes", file=sys.stderr)


if __name__ == "__main__":
    common.cli(main)

"""How good are the samples: Fréchet distance and KID in two feature spaces, and the Inception Score.

Two feature spaces, named so that nobody confuses them:
  fid, kid, is                   the standard FID Inception network: pool_3 (2048-d) of the 2015-12-05 Inception
                                 graph, as in the original FID code (TTUR) and TF-GAN, loaded in TF2 by inception.py.
                                 Comparable with published numbers; needs the graph (downloaded once, or --inception
                                 PATH).
  classifier_fd, classifier_kid  a small CNN trained here once on the dataset's training split (fixed seed), its
                                 128-d penultimate layer. Offline and fast, for fashion_mnist / mnist only, and
                                 comparable only with itself (same dataset, image size, cache). It is not FID.

    python metrics.py runs/dcgan-fashion_mnist-20261127-120000               # classifier_fd, 10,000 samples
    python metrics.py RUN --best --metric classifier_fd classifier_kid       # the run's best checkpoint
    python metrics.py fake.npz --dataset fashion_mnist                       # from sample.py --num N --format npz
    python metrics.py fake_png/ --dataset cifar10 --metric fid kid is        # downloads the Inception graph once
    python metrics.py fake.npz --dataset cifar10 --metric fid --inception ~/inception-2015-12-05.tgz   # offline
    python metrics.py RUN --metric classifier_precision classifier_recall classes     # mode collapse, offline

Mode collapse: `precision`, `recall` (Kynkaanniemi et al. 2019), `density`, `coverage` (Naeem et al. 2020) in
Inception's feature space, `classifier_precision` etc. in the classifier's, against the cached reference
features (10,000 of the split), k = --k; low recall or coverage with fine precision is a collapsed generator.
`classes` (MNIST-like data): how many of the classifier's classes the samples cover, and the KL divergence of their
predicted-class histogram from the real images' (`classes_kl`). Each value is printed with its feature network,
k and both sample counts.

Which number to quote: Inception `fid` of 10,000 (or 50,000) samples against the full training split's
statistics, saying the count: FID is biased and falls as the sample count grows, so only equal counts compare.
KID is unbiased (Binkowski et al. 2018, mean of 100 subsets of 1,000). IS is higher-is-better and needs 50,000
samples to match papers. Every other metric is lower-is-better. The cache (--cache_dir, default $GAN_CACHE or
~/.cache/tf-gans) holds the Inception archive, the classifier and the reference statistics; runs may share it,
also at the same time. During training, Evaluator scores --eval_samples images every --eval_every steps.
The reference images have the run's geometry (its --fit: resized, or padded with black); the classifier is the
one trained on resized images either way, a fixed feature extractor like Inception.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time
import zipfile
import zlib

import keras
import numpy as np
import tensorflow as tf

import common
import data
import folders
import files
import inception

MANIFOLD = ("precision", "recall", "density", "coverage")  # per feature space: "precision" is Inception's
METRICS = ("classifier_fd", "classifier_kid", "fid", "kid", "is", *(f"classifier_{m}" for m in MANIFOLD),
           *MANIFOLD, "classes")
LABELLED = ("fashion_mnist", "mnist")  # the classifier needs labels
CLASSIFIER_EPOCHS = 8
KID_FEATURES = 10_000  # reference features kept for KID, and the real set of precision/recall/density/coverage
K_NEAREST = 5  # k of precision/recall/density/coverage: Naeem et al.'s and StudioGAN's (NVIDIA's P&R code uses 3)
CLASS_COVERED = 0.1  # a class is covered when it gets at least this share of its real share of the samples


def default_metric(dataset):
    """The score to minimise for a dataset: the offline classifier_fd where there are labels, else Inception fid."""
    return "classifier_fd" if dataset in LABELLED else "fid"


def default_cache_dir():
    return os.environ.get("GAN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tf-gans")


def _cache_error(path, e):
    return common.RunError(f"cannot write {path} ({e.strerror or e}); free some space or set $GAN_CACHE "
                           "(metrics.py: --cache_dir) to a writable folder.")


# ------------------------------------------------------------------------------------------------ the distances
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2) between N(mu1, S1) and N(mu2, S2), in float64.

    tr((S1 S2)^1/2) = tr((S1^1/2 S2 S1^1/2)^1/2), the square root of a symmetric PSD matrix: two eigh calls with
    negative round-off eigenvalues clipped, instead of scipy's sqrtm on the non-symmetric S1 S2 (which can return
    complex values and needs the epsilon fix of the original FID code).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: {mu1.shape}, {s1.shape} vs {mu2.shape}, {s2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    sqrt_s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = sqrt_s1 @ s2 @ sqrt_s1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def kernel_inception_distance(feats1, feats2, num_subsets=100, subset_size=1000, seed=0):
    """Unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018), averaged over subsets.

    With fewer than `subset_size` vectors on a side the subsets shrink to the smaller side, as in clean-fid's
    kernel_distance: the estimate stays unbiased, only noisier. It needs 2 vectors on each side.
    """
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError("KID needs at least 2 feature vectors on each side")
    rng, d = np.random.default_rng(seed), f1.shape[1]
    mmds = []
    for _ in range(num_subsets):
        x, y = f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        # Unbiased: the diagonals k(x_i, x_i) are left out of the within-sample means.
        mmds.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(mmds))


def inception_score(logits, splits=10):
    """exp(E_x KL(p(y|x) || p(y))), the mean over `splits` parts (Salimans et al. 2016); higher is better."""
    logits = np.asarray(logits, np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    scores = []
    for part in np.array_split(logp, min(splits, len(logp))):
        p = np.exp(part)
        scores.append(np.exp((p * (part - np.log(p.mean(0, keepdims=True)))).sum(1).mean()))
    return float(np.mean(scores))


def _squared_norms(x):
    return np.einsum("ij,ij->i", x, x)


def _distance_chunks(a, b, chunk_elements=1 << 24):
    """(start, stop, squared distances [stop - start, len(b)]) over row chunks of a, in float64, a chunk of at most
    chunk_elements (128 MiB) at a time, so that 10,000 x 10,000 never sits in memory at once. Squared: every
    comparison below is between squared distances and squared radii (the same order, one square root less)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    b_norms, rows = _squared_norms(b), max(1, chunk_elements // max(len(b), 1))
    for start in range(0, len(a), rows):
        part = a[start:start + rows]
        squared = part @ b.T
        squared *= -2
        squared += _squared_norms(part)[:, None]
        squared += b_norms[None, :]
        yield start, start + len(part), np.maximum(squared, 0.0, out=squared)  # round-off can dip below 0


def nearest_neighbour_radii(features, k):
    """Squared distance of each vector to its k-th nearest neighbour in its own set (itself, at 0, not counted)."""
    radii = np.empty(len(features))
    for start, stop, d in _distance_chunks(features, features):
        d[np.arange(stop - start), np.arange(start, stop)] = 0.0  # itself: exactly 0, the first of the sorted row
        radii[start:stop] = np.partition(d, k, axis=1)[:, k]
    return radii


def manifold_metrics(real, fake, k=K_NEAREST):
    """Precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020), in float64.

    Every real vector gets a ball of radius = distance to its k-th nearest real neighbour, every fake vector one
    from the fakes. precision = share of fakes inside some real ball; recall = share of reals inside some fake ball;
    density = (1 / kM) x the number of (fake, real ball holding it) pairs, M fakes (about 1 for matching sets, can
    exceed 1); coverage = share of real balls holding at least one fake. Inside is <= for precision and recall (a
    ball includes its boundary, as in NVIDIA's code) and < for density and coverage (as in Naeem's code).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall/density/coverage with k = {k} need more than {k} vectors on each side, "
                         f"not {len(real)} real and {len(fake)} fake")
    real_radii, fake_radii = nearest_neighbour_radii(real, k), nearest_neighbour_radii(fake, k)
    balls_holding = np.zeros(len(fake), np.int64)  # per fake: how many real balls hold it (<)
    in_a_real_ball = np.zeros(len(fake), bool)  # per fake, <=
    in_a_fake_ball = np.zeros(len(real), bool)  # per real
    covered = np.zeros(len(real), bool)  # per real ball
    for start, stop, d in _distance_chunks(real, fake):  # d[i, j]: real start + i to fake j, squared
        radius = real_radii[start:stop, None]
        in_a_real_ball |= (d <= radius).any(axis=0)
        balls_holding += (d < radius).sum(axis=0)
        in_a_fake_ball[start:stop] = (d <= fake_radii[None, :]).any(axis=1)
        covered[start:stop] = d.min(axis=1) < real_radii[start:stop]
    return {"precision": float(in_a_real_ball.mean()), "recall": float(in_a_fake_ball.mean()),
            "density": float(balls_holding.sum() / (k * len(fake))), "coverage": float(covered.mean())}


def class_coverage(fake_logits, real_logits, num_classes=None, covered_share=CLASS_COVERED):
    """(classes covered, KL(fake || real)) of the predicted-class histograms of fake and real images.

    Mode collapse as counted on MNIST-like data (Metz et al. 2017, Srivastava et al. 2017): a class is covered when
    its share of the samples is at least covered_share (0.1) x its share of the real images, i.e. 1% of the
    samples for ten balanced classes, so that a few stray misclassified samples do not count as a mode. KL runs
    from the real histogram to the samples' (sum of p_fake log(p_fake / p_real)), finite when classes are missing
    from the samples; 0 for matching histograms.
    """
    fake_logits, real_logits = np.asarray(fake_logits), np.asarray(real_logits)
    n = num_classes or real_logits.shape[1]
    p_fake = np.bincount(fake_logits.argmax(1), minlength=n) / len(fake_logits)
    p_real = np.bincount(real_logits.argmax(1), minlength=n) / len(real_logits)
    covered = int(np.sum((p_fake >= covered_share * p_real) & (p_real > 0)))
    present = p_fake > 0
    kl = float(np.sum(p_fake[present] * np.log(p_fake[present] / np.maximum(p_real[present], 1e-12))))
    return covered, kl


def statistics(features):
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


# ------------------------------------------------------------------------------------- the offline classifier
def make_classifier(image_size=32, channels=1, seed=0):
    """A small CNN, (images uint8) -> 10 logits; every layer float32 and seeded (no global RNG is touched)."""
    layers, init = keras.layers, lambda i: keras.initializers.HeUniform(seed=seed + i)
    x_in = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Rescaling(1 / 127.5, -1.0, dtype="float32")(x_in)
    # [S, S, C] -> [S/2, S/2, 32] -> [S/4, S/4, 64] -> [S/8, S/8, 128]: strided convolutions keep it cheap on CPU.
    for i, (filters, kernel) in enumerate(((32, 5), (64, 3), (128, 3))):
        x = layers.Conv2D(filters, kernel, 2, padding="same", use_bias=i == 0, kernel_initializer=init(i),
                          dtype="float32")(x)
        if i:
            x = layers.BatchNormalization(dtype="float32")(x)
        x = layers.ReLU(dtype="float32")(x)
    x = layers.Dropout(0.3, seed=seed, dtype="float32")(layers.Flatten(dtype="float32")(x))
    x = layers.Dense(128, activation="relu", kernel_initializer=init(8), name="features", dtype="float32")(x)
    return keras.Model(x_in, layers.Dense(10, kernel_initializer=init(9), dtype="float32")(x), name="classifier")


def read_labels(dataset, data_dir=None, split="train"):
    """The IDX label file of (Fashion-)MNIST that data.load_images' images come from, in the same order."""
    path = data.find_idx(dataset, data_dir, split, kind="labels")
    if path is not None:
        return data.read_idx(path, ndim=1)
    if data_dir:
        raise data.DataError(f"No {split} label file (*-labels-idx1-ubyte(.gz)) in {data_dir}; the classifier "
                             "metrics need the label files too.")
    try:
        (_, y_train), (_, y_test) = getattr(keras.datasets, dataset).load_data()
    except Exception:  # Keras re-raises download errors as a bare Exception
        raise data.DataError(f"Could not find or download the {dataset} labels; pass --data_dir with the "
                             "original IDX files.") from None
    return np.asarray(y_train if split == "train" else y_test, np.uint8)


def train_classifier(dataset, data_dir, image_size, channels, path, seed=0, epochs=None):
    """Train the classifier on the training split, save its weights at `path` and a JSON next to it."""
    epochs = epochs or CLASSIFIER_EPOCHS
    x, y = data.load_images(dataset, data_dir, image_size, channels, "train"), read_labels(dataset, data_dir)
    x_test = data.load_images(dataset, data_dir, image_size, channels, "test")
    y_test = read_labels(dataset, data_dir, "test")
    if len(x) != len(y) or len(x_test) != len(y_test):
        raise data.DataError(f"The {dataset} image and label files do not match in length; re-download them.")
    start, model = time.perf_counter(), make_classifier(image_size, channels, seed)
    steps = epochs * -(-len(x) // 128)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    # The data order comes from NumPy, seeded: tf.data's shuffle would also depend on TF's global seed, which
    # a training script calling make_scorer has set to its own value.
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)])
    train = (tf.data.Dataset.from_tensor_slices(order).batch(128)
             .map(lambda i: (tf.gather(x, i), tf.gather(y, i))).prefetch(2))
    model.fit(train, epochs=1, verbose=0, shuffle=False)
    accuracy = float(model.evaluate(x_test, y_test, batch_size=500, verbose=0)[1])
    info = dict(dataset=dataset, image_size=image_size, channels=channels, seed=seed, epochs=epochs,
                test_accuracy=accuracy, train_seconds=round(time.perf_counter() - start, 1))
    try:
        with files.atomic_write(path.replace(".weights.h5", ".json"), "w") as f:
            json.dump(info, f, indent=2)
        with files.atomic_path(path, suffix=".weights.h5") as tmp:  # the weights last: they mark the entry complete
            model.save_weights(tmp)
    except OSError as e:
        raise _cache_error(path, e) from None
    print(f"trained the offline classifier on {dataset} in {info['train_seconds']:.0f} s: test accuracy "
          f"{accuracy:.2%} ({path})", file=sys.stderr)
    return model, info


def classifier_network(dataset, data_dir=None, image_size=32, channels=1, cache_dir=None):
    """-> (features(images uint8 NHWC) -> (128-d penultimate activations, 10 logits), id of the weights); the
    function's .head maps features to logits (the last layer), for the reference features' class histogram."""
    if dataset not in LABELLED:
        raise common.RunError(f"the classifier metrics need a labelled MNIST-like dataset ({', '.join(LABELLED)}), "
                              f"not {dataset}; use --metric fid.")
    path = os.path.join(cache_dir or default_cache_dir(), "classifier", _key(dataset, data_dir, image_size,
                                                                             channels) + ".weights.h5")
    if os.path.isfile(path):
        model = make_classifier(image_size, channels)
        try:
            model.load_weights(path)
        except (OSError, ValueError) as e:
            raise common.RunError(f"{path} does not fit the classifier ({type(e).__name__}); delete it to "
                                  "train it again.") from None
    else:
        model, _ = train_classifier(dataset, data_dir, image_size, channels, path)
    extract = tf.function(keras.Model(model.input, [model.get_layer("features").output, model.output]))

    def features(images):
        feats, logits = extract(tf.constant(images), training=False)
        return feats.numpy(), logits.numpy()
    features.head = lambda feats: model.layers[-1](tf.constant(feats, tf.float32)).numpy()  # features -> logits
    return features, _weights_id(model)


def _weights_id(model):
    """The id of the weights in memory, not of the file: a run training at the same time may have replaced it."""
    digest = hashlib.sha256()
    for w in model.weights:
        digest.update(np.ascontiguousarray(w.numpy()).tobytes())
    return digest.hexdigest()[:16]


# -------------------------------------------------------------------------------------------------- scoring
def _key(dataset, data_dir, image_size, channels):
    where = f"-{hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:8]}" if data_dir else ""
    return f"{dataset}{where}-{image_size}px-{channels}ch"


def _read_statistics(path):
    """The cached reference statistics at `path`, or {} if there are none or they cannot be read (recomputed)."""
    try:
        with np.load(path) as f:
            return {k: f[k] for k in ("mu", "sigma", "features", "network")}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):  # OSError: also a missing file
        return {}


def _features(network, images, batch_size):
    out = [network(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    logits = None if out[0][1] is None else np.concatenate([o[1] for o in out])
    return np.concatenate([o[0] for o in out]), logits


def _family(metric):
    return "classifier" if metric.startswith("classifier") or metric == "classes" else "inception"


def make_scorer(metric, dataset, data_dir=None, image_size=32, channels=1, cache_dir=None, inception_path=None,
                split="train", batch_size=100, k=K_NEAREST, fit="resize"):
    """-> score(images uint8 (N, H, W, C)) -> {name: float} for the metric name(s) asked, in the order asked.

    The first key is the value to minimise when choosing checkpoints, so pass a lower-is-better metric first
    (the distances fd and kid); default_metric(dataset) is the usual choice. "classes" gives two values, "classes"
    (classes covered) and "classes_kl". score.notes[name] says what each value was computed from (the feature
    network, k, both sample counts), for printing beside it. The feature network and the reference
    statistics of `dataset`'s `split` are loaded here, or computed once and cached, not at every call. The real
    images are loaded with `fit` (data.load_images'), the generator's geometry, so that real and fake compare.
    `inception_path` is a local copy of the FID Inception graph (see inception.inception_network).
    """
    names = [metric] if isinstance(metric, str) else list(metric)
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise common.RunError(f"unknown metric {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}.")
    cache_dir = cache_dir or default_cache_dir()
    scorers = {}
    for family in dict.fromkeys(_family(m) for m in names):
        if family == "classifier":
            # Trained on resized images whatever `fit` is: a fixed feature extractor, as Inception is for FID.
            network, network_id = classifier_network(dataset, data_dir, image_size, channels, cache_dir)
        else:
            network, network_id = inception.inception_network(cache_dir, inception_path)
            if "is" in names and network(np.zeros((1, 8, 8, 3), np.uint8))[1] is None:
                raise common.RunError("this Inception graph has no softmax layer, so it gives no Inception Score.")
        geometry = "" if fit == "resize" else f"-{fit}"  # resize: no suffix (a config without fit is resize)
        path = os.path.join(cache_dir, "stats",
                            f"{family}-{_key(dataset, data_dir, image_size, channels)}{geometry}-{split}.npz")
        scorers[family] = (network, _reference_statistics(
            path, network, network_id, batch_size, f"{family} statistics of {dataset} ({split} split)",
            lambda: data.load_images(dataset, data_dir, image_size, channels, split, fit=fit)))
    if "classes" in names and dataset not in LABELLED:
        raise common.RunError(f"classes needs a labelled MNIST-like dataset ({', '.join(LABELLED)}), not {dataset}.")

    def score(images):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (image_size, image_size, channels) \
                or len(images) < 2:
            raise common.RunError(f"images are {images.dtype} {images.shape}, not uint8 (N >= 2, {image_size}, "
                                  f"{image_size}, {channels}) as the reference statistics.")
        values = {}
        for family, (network, ref) in scorers.items():
            values.update(_family_values(family, network, ref, images, names, k, split, batch_size, notes))
        return {m: values[m] for name in names for m in (("classes", "classes_kl") if name == "classes" else (name,))}
    notes = score.notes = {}
    return score


def _reference_statistics(path, network, network_id, batch_size, what, real_images):
    """The statistics cached at `path` if `network_id` made them, else computed once from real_images() and
    cached: mu, sigma, KID_FEATURES of the features, and the id of the network."""
    reference = _read_statistics(path)
    if str(reference.get("network")) == network_id:
        return reference
    print(f"computing {what} once ...", file=sys.stderr)  # missing, or made by another network (retrained)
    feats, _ = _features(network, real_images(), batch_size)
    mu, sigma = statistics(feats)
    subset = feats[np.random.default_rng(0).permutation(len(feats))[:KID_FEATURES]]
    reference = dict(mu=mu, sigma=sigma, features=subset, network=network_id)
    try:
        with files.atomic_write(path) as f:
            np.savez(f, **reference)
    except OSError as e:
        raise _cache_error(path, e) from None
    return reference


def _family_values(family, network, ref, images, names, k, split, batch_size, notes):
    """{name: value} of the metrics in `names` that one feature network gives for `images`; notes[name] says what
    each was computed from."""
    feats, logits = _features(network, images, batch_size)
    prefix, what = ("classifier_", "classifier") if family == "classifier" else ("", "Inception pool_3")
    counts = f"{len(images)} fake vs"
    fd, kd = prefix + "fd" if prefix else "fid", prefix + "kid" if prefix else "kid"
    values = {}
    if fd in names:
        values[fd] = frechet_distance(*statistics(feats), ref["mu"], ref["sigma"])
        notes[fd] = f"{what} features, {counts} the {split} split's statistics"
    if kd in names:
        values[kd] = kernel_inception_distance(feats, ref["features"])
        notes[kd] = f"{what} features, {counts} {len(ref['features'])} real"
    if family == "inception" and "is" in names:
        values["is"] = inception_score(logits)
        notes["is"] = f"Inception logits, {len(images)} fake"
    if any(prefix + m in names for m in MANIFOLD):
        for m, v in manifold_metrics(ref["features"], feats, k).items():
            values[prefix + m] = v
            notes[prefix + m] = f"{what} features, k {k}, {counts} {len(ref['features'])} real"
    if family == "classifier" and "classes" in names:
        real_logits = network.head(ref["features"])
        values["classes"], values["classes_kl"] = class_coverage(logits, real_logits)
        notes["classes"] = notes["classes_kl"] = f"classifier's predicted classes, {counts} {len(real_logits)} real"
    return values


# ---------------------------------------------------------------------------------- evaluation during training
MIN_SAMPLES = 2  # score() refuses fewer: a covariance (FD) and KID's within-set means need two; IS is not minimised


def check_eval_args(eval_samples, metric=None, extra=(), dataset=None):
    """Refuse, before a run writes anything, what would otherwise fail at its first evaluation.

    `metric` is a name, a list of names, or None (the dataset's default). Every metric needs 2 images: FD a
    covariance, KID its unbiased within-set means (its subsets of 1,000 shrink to the sample count, as in
    clean-fid). Fewer images than feature dimensions (128 classifier, 2048 Inception) still give a number, a
    more biased one; only equal counts compare.
    """
    names = [] if metric is None else [metric] if isinstance(metric, str) else list(metric)
    unknown = [m for m in names + list(extra) if m not in METRICS]
    if unknown:
        raise common.RunError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRICS)}.")
    if "classes" in extra and dataset not in LABELLED:
        raise common.RunError(f"--eval_extra classes needs a labelled MNIST-like dataset ({', '.join(LABELLED)}), "
                              f"not {dataset}.")
    if any(m.endswith(MANIFOLD) for m in extra) and eval_samples <= K_NEAREST:
        raise common.RunError(f"--eval_samples {eval_samples} is too few for precision/recall/density/coverage, "
                              f"whose k = {K_NEAREST} needs more than {K_NEAREST} images.")
    if eval_samples < MIN_SAMPLES:
        what = "/".join(names) or "the metric"
        raise common.RunError(f"--eval_samples {eval_samples} is too few for {what}, which needs at least "
                              f"{MIN_SAMPLES} images; use 10000 to compare with published numbers.")


class Evaluator:
    """--eval_every: score --eval_samples generated images and log the scores (see make_scorer).

    Built before the run directory is written, so that a bad flag, missing labels or an unreachable Inception
    graph stop the run before it starts; the classifier or the reference statistics are computed here once.
    """

    def __init__(self, args):
        extra = list(getattr(args, "eval_extra", None) or [])
        check_eval_args(args.eval_samples, args.metric, extra, args.dataset)
        self.metric = args.metric or default_metric(args.dataset)
        # --eval_extra (precision, recall, classes, ...) are logged beside the metric, never minimised: the best
        # checkpoint is the lowest distance, the first key.
        self.scorer = make_scorer([self.metric, *[m for m in extra if m != self.metric]], args.dataset,
                                  args.data_dir, args.image_size, args.channels, fit=getattr(args, "fit", "resize"))
        # Not the run's seed: the fixed sample grid uses that noise, and evaluation should see other images.
        self.n, self.z_dim, self.seed = args.eval_samples, args.z_dim, args.seed + 1

    def __call__(self, generator, step, logger):
        """Score the generator; log eval/<metric> scalars and one line; return the score to minimise."""
        scores = self.scorer(common.generate_images(generator, self.n, self.z_dim, self.seed))
        logger.scalars(step, {f"eval/{k}": v for k, v in scores.items()})
        logger.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        return next(iter(scores.values()))


# ------------------------------------------------------------------------------------------------------ CLI
def read_samples(path, num, seed, step, best):
    """(images uint8 NHWC, config or None): generated from a run directory, or read from an .npz or a folder."""
    if os.path.isfile(os.path.join(path, "config.json")):
        generator, config, ckpt = common.load_generator(path, step, best)
        print(f"scoring {num or 10_000} samples of {ckpt}", file=sys.stderr)
        return common.generate_images(generator, num or 10_000, config["z_dim"], seed), config
    if path.endswith(".npz") and os.path.isfile(path):
        return read_npz(path, num), None
    if os.path.isdir(path):
        from PIL import Image
        first = folders.list_images(path)[0]  # walks each folder once; DataError if it holds no images
        with Image.open(first) as image:
            size, channels = min(image.size), 1 if image.mode in ("L", "I", "I;16", "1") else 3
        return data.load_images("folder", path, size, channels, limit=num), None
    raise common.RunError(f"{path} is neither a run directory, an .npz file nor a folder of images.")


NPZ_FORMAT = "uint8 images (N, S, S, 1 or 3) under 'images', as sample.py --format npz writes"
NPZ_MAX_RATIO = 1100  # deflate expands at most about 1032:1, so a member claiming more holds less than it says


def read_npz(path, num=None):
    """The uint8 images (N, S, S, 1 or 3) under 'images' in an .npz, the first `num` of them if given.

    The array's .npy header is read from the zip member (numpy.lib.format; nothing is unpickled) and checked before
    anything is allocated: dtype, shape, square images, 1 or 3 channels, at least MIN_SAMPLES images (and `num`),
    and that the member holds as many bytes as the header claims and no more than this machine's memory.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if "images.npy" not in archive.namelist():
                raise common.RunError(f"{path} holds no 'images' array; pass an .npz of {NPZ_FORMAT}.")
            member = archive.getinfo("images.npy")
            with archive.open(member) as f:
                shape, fortran_order = _npz_header(path, f, num)
                stored, claimed = member.file_size - f.tell(), math.prod(shape)  # Python ints: no overflow
                if stored != claimed:
                    raise common.RunError(f"{path} has a header claiming {_size(claimed)} of images but holds "
                                          f"{_size(stored)}; it is damaged, write it again with sample.py.")
                if member.file_size > NPZ_MAX_RATIO * member.compress_size + 4096:
                    raise common.RunError(f"{path} claims {_size(member.file_size)} of images in "
                                          f"{_size(member.compress_size)}, more than compression can give; it is "
                                          "damaged, write it again with sample.py.")
                count = min(shape[0], num or shape[0])
                wanted = claimed if fortran_order else count * claimed // shape[0]  # Fortran order: all of it
                memory = _memory_bytes()
                if memory and wanted > memory:
                    raise common.RunError(f"{path} holds {shape[0]} images ({_size(wanted)}), more than this "
                                          f"machine's {_size(memory)} of memory; pass --num to score fewer.")
                try:
                    data = bytearray(wanted)
                    read = f.readinto(data)
                except MemoryError:
                    raise common.RunError(f"{path} holds {_size(wanted)} of images, more than the memory free "
                                          "now; pass --num to score fewer.") from None
                if read != wanted:
                    raise EOFError("the member ends early")
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise common.RunError(f"{path} is not a readable .npz ({type(e).__name__}); pass an .npz of "
                              f"{NPZ_FORMAT}.") from None
    if fortran_order:
        return np.ascontiguousarray(np.frombuffer(data, np.uint8).reshape(shape, order="F")[:count])
    return np.frombuffer(data, np.uint8).reshape((count, *shape[1:]))


def _npz_header(path, f, num):
    """(shape, fortran_order) of the .npy header at f's position, refused unless it holds usable images."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise common.RunError(f"{path} holds an .npy of format {version}, which numpy writes for no uint8 array; "
                              f"pass an .npz of {NPZ_FORMAT}.")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(f)
    if dtype != np.uint8 or len(shape) != 4 or shape[3] not in (1, 3) or min(shape[1:3]) < 1:
        raise common.RunError(f"{path} holds {dtype} {shape}, not {NPZ_FORMAT}.")
    if shape[1] != shape[2]:
        raise common.RunError(f"{path} holds {shape[1]}x{shape[2]} images, not square ones; the reference images "
                              "are square, so resize or crop the samples first.")
    if shape[0] < MIN_SAMPLES:
        raise common.RunError(f"{path} holds {shape[0]} image{'s' * (shape[0] != 1)}, fewer than the {MIN_SAMPLES} "
                              "every metric needs; write more samples with sample.py --num.")
    if num and shape[0] < num:
        raise common.RunError(f"{path} holds {shape[0]} images, fewer than --num {num}; pass --num {shape[0]} or "
                              "write more samples.")
    return shape, fortran_order


def _size(n):
    """n bytes, for a message."""
    return f"{n / 2 ** 40:.1f} TiB" if n >= 2 ** 40 else f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n} bytes"


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not a POSIX system: no limit known
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("path", help="a run directory (samples are generated), an .npz with uint8 'images', or a folder of images")
    add("--dataset", choices=data.DATASETS, default=None, help="reference dataset (default: the run's)")
    add("--data_dir", default=None, help="where the dataset's files are (default: the run's, or the usual place)")
    add("--metric", nargs="+", choices=METRICS, default=None,
        help="what to compute (default: classifier_fd for fashion_mnist/mnist, fid otherwise)")
    add("--num", type=int, default=None, help="samples to generate from a run (default 10000), or to read at most")
    add("--seed", type=int, default=0, help="seeds the noise of generated samples")
    add("--step", type=int, default=None, help="score the run's checkpoint at this step (default: the newest)")
    add("--best", action="store_true", help="score the run's best checkpoint (ckpt_best/)")
    add("--split", choices=("train", "test"), default="train", help="the reference split")
    add("--fit", choices=data.FITS, default=None,
        help="how the reference images reach the samples' size, as the training scripts' --fit (default: the run's, "
             "else resize)")
    add("--cache_dir", default=None, help="where networks and statistics are cached (default $GAN_CACHE or "
                                          "~/.cache/tf-gans)")
    add("--inception", default=None, metavar="PATH",
        help="a local inception-2015-12-05.tgz or its classify_image_graph_def.pb (for machines without internet)")
    add("--batch_size", type=int, default=100, help="images per network call")
    add("--k", type=int, default=K_NEAREST,
        help="k nearest neighbours of precision/recall/density/coverage (5: Naeem et al., StudioGAN; NVIDIA: 3)")
    args = parser.parse_args(argv)
    if args.num is not None and args.num < 2:
        parser.error("--num must be at least 2")
    if args.k < 1:
        parser.error("--k must be at least 1")
    images, config = read_samples(args.path, args.num, args.seed, args.step, args.best)
    dataset = args.dataset or (config or {}).get("dataset")
    if dataset is None:
        raise common.RunError(f"{args.path} is not a run directory; say which dataset to compare with (--dataset).")
    metric = args.metric or [default_metric(dataset)]
    data_dir = args.data_dir or ((config or {}).get("data_dir") if dataset == (config or {}).get("dataset") else None)
    fit = args.fit or (config or common.BEFORE_FLAGS)["fit"]
    score = make_scorer(metric, dataset, data_dir, images.shape[1], images.shape[3], args.cache_dir,
                        args.inception, args.split, args.batch_size, args.k, fit)
    try:
        values = score(images)
    except ValueError as e:  # too few images for k
        raise common.RunError(f"{e}.") from None
    for name, value in values.items():
        print(f"{name}: {value:.6g}  ({score.notes[name]})")


if __name__ == "__main__":
    common.cli(main)

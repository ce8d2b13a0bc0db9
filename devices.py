"""Devices and precision: everything the three scripts do because a step may run on several GPUs or machines, or in
16-bit floats. A line of a script that calls devices.x(...) is about where and in what precision the algorithm runs,
never about the algorithm.

- make_strategy: the tf.distribute strategy of --strategy (one device, the local GPUs or logical CPU devices, or
  several machines configured by TF_CONFIG);
- set_precision: Keras' dtype policy of --precision;
- prepare_optimizers and LossScaleOptimizer: fp16's dynamic loss scaling, skipping an update on every replica and
  worker alike;
- reduce_metrics: the logged values of all replicas in one all-reduce per step;
- distribute_dataset: replica r of R reads slice r of every global batch;
- agree_to_stop: several workers stop after the same step.

Several machines: TensorFlow's gRPC server, which --strategy multi_worker starts on each worker's port in TF_CONFIG,
accepts connections from anyone who can reach that port, unauthenticated. Run several machines only on a private
network or behind a firewall (docs/devices.md).
"""
import json
import os
import sys

import keras
import tensorflow as tf

import common
import data


_MIRRORED = {}  # devices -> the process's MirroredStrategy over them


def make_strategy(args):
    """The tf.distribute strategy named by --strategy. Call it first: a multi-worker strategy must be created
    before any other TensorFlow work, and the batch-size check needs the number of replicas in use."""
    name = args.strategy
    if name == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
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
        raise common.RunError(f"--batch_size {args.batch_size} does not split evenly over the {replicas} devices "
                              f"in use; use a multiple of {replicas}.")
    if args.xla and replicas > 1:
        # Synchronized BatchNorm all-reduces inside the per-device computation, and a collective cannot sit
        # inside a nested jit_compile function; XLA here compiles per-device work only.
        raise common.RunError(f"--xla compiles one device's train step and cannot include the BatchNorm statistics "
                              f"synchronized across the {replicas} devices in use; drop --xla or use --strategy one.")
    return strategy


def check_tf_config(text):
    """RunError in one sentence unless TF_CONFIG is JSON naming a cluster of host:port lists and this task in it."""
    fix = "set TF_CONFIG as docs/devices.md shows"
    if not text:
        raise common.RunError(f"--strategy multi_worker needs the TF_CONFIG environment variable that lists the "
                              f"workers; {fix}.")
    try:
        config = json.loads(text)
    except ValueError as e:
        raise common.RunError(f"TF_CONFIG is not valid JSON ({e}); {fix}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
            for hosts in cluster.values()):
        raise common.RunError(f"TF_CONFIG's cluster must map task types to lists of host:port strings; {fix}.")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise common.RunError(f"TF_CONFIG's task must name a type of its cluster and an index within it; {fix}.")


def set_precision(precision, xla=False):
    """Keras' global dtype policy, set before the networks are built. Mixed policies keep the variables in float32
    and compute in bfloat16/float16; the networks' outputs (ops.py), the losses, LayerNorm's statistics and the
    gradient penalty's norm stay in float32."""
    keras.mixed_precision.set_global_policy(common.PRECISIONS[precision])
    if precision == "fp16" and not xla and not tf.config.list_logical_devices("GPU"):
        # Measured with benchmarks/bench_train.py: ~150x slower than fp32 (oneDNN has no float16 kernels for
        # these ops on most CPUs, TF falls back to Eigen); XLA's CPU backend does not have that problem.
        print("warning: --precision fp16 on a CPU without --xla runs about 150 times slower than fp32; use fp32 "
              "or bf16 here, or add --xla.", file=sys.stderr)


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
    with tf.name_scope("reduce_metrics"):  # benchmarks/profile_step.py --by_part tells its ops apart by this scope
        return _reduce(strategy, metrics)


def _reduce(strategy, metrics):
    names = list(metrics)
    stacked = strategy.run(lambda *values: tf.stack([tf.cast(v, tf.float32) for v in values]),
                           args=tuple(metrics[k] for k in names))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, stacked, axis=None)
    return {k: total[i] for i, k in enumerate(names)}


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


def agree_to_stop(strategy, wants_to_stop):
    """Several workers: True on every worker if any of them wants to stop, by one all-reduce of a flag. Call it at
    the same steps on all of them (the loop's sync points are a function of the step and the flags)."""
    if strategy not in _FLAG_SUM:
        @tf.function
        def flag_sum(flag):
            return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(flag,)), axis=None)
        _FLAG_SUM[strategy] = flag_sum
    return float(_FLAG_SUM[strategy](tf.constant(float(wants_to_stop)))) > 0


_FLAG_SUM = {}  # strategy -> its traced flag all-reduce

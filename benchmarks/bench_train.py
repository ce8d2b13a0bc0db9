"""Training throughput of the three variants: generator steps/s and real images/s, with the real data pipeline.

    python benchmarks/bench_train.py                          # all three, 32x32 Fashion-MNIST, each script's defaults
    python benchmarks/bench_train.py --variants dcgan --batch_size 64 --steps 100 --xla

Prints one line per variant. Uses each script's own make_train_step and data.make_dataset, so it measures what
training does, minus checkpoints and sample grids.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import data  # noqa: E402
import dcgan  # noqa: E402
import ops  # noqa: E402
import wgan  # noqa: E402
import wgan_gp  # noqa: E402

MODULES = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp}


def bench(name, flags, steps, warmup):
    module = MODULES[name]
    args = module.parse_args(flags)
    strategy = tf.distribute.get_strategy()
    generator = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width)
    critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
    if name == "wgan":
        g_opt, c_opt = keras.optimizers.RMSprop(args.lr), keras.optimizers.RMSprop(args.lr)
    else:
        g_opt, c_opt = (keras.optimizers.Adam(args.lr, beta_1=args.beta1, beta_2=args.beta2) for _ in range(2))
    rng = tf.random.Generator.from_seed(0)
    dataset = data.make_dataset(args.dataset, args.data_dir, args.image_size, args.channels, args.batch_size)
    iterator = iter(dataset)
    step = module.make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng)
    n_critic = getattr(args, "n_critic", 1)
    run = (lambda: step(iterator)) if name == "dcgan" else (lambda: step(iterator, n_critic))
    for _ in range(warmup):
        run()
    start = time.perf_counter()
    for _ in range(steps):
        metrics = run()
    float(next(iter(metrics.values())))  # wait for the last step
    seconds = time.perf_counter() - start
    print(f"{name:8s} batch {args.batch_size:4d} n_critic {n_critic}  {steps / seconds:7.2f} generator steps/s  "
          f"{steps * n_critic * args.batch_size / seconds:8.1f} real images/s  "
          f"({ops.count_params(generator):,} + {ops.count_params(critic):,} params, xla={args.xla})", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--steps", type=int, default=50, help="timed generator steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (tracing, autotuning)")
    known, rest = parser.parse_known_args()  # everything else goes to the scripts' own parsers
    print(f"tensorflow {tf.__version__}, devices: {[d.name for d in tf.config.list_logical_devices()]}")
    for variant in known.variants:
        bench(variant, rest, known.steps, known.warmup)

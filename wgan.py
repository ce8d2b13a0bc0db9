"""WGAN: Arjovsky, Chintala, Bottou 2017, "Wasserstein GAN", Algorithm 1 (weight clipping).

The critic (no sigmoid) maximises E[D(real)] - E[D(fake)], an estimate of the Wasserstein-1 distance up to a
constant while D stays K-Lipschitz, which clipping every critic weight to [-c, c] after each update enforces
crudely; the generator maximises E[D(fake)]. RMSProp(5e-5), c = 0.01, n_critic = 5, batch 64. As in the
authors' code (not the paper), the critic gets 100 updates for the first 25 generator steps and every 500th
("train the critic to optimality"): --no-critic_warmup turns that off.

    python wgan.py                                      # Fashion-MNIST 32x32, the paper's settings
    python wgan.py --steps 300 --sample_every 100       # a short CPU run (a few minutes on 2 cores)
    python wgan.py --resume runs/wgan-fashion_mnist-20261127-120000
    python sample.py runs/wgan-fashion_mnist-20261127-120000
"""
import argparse

import keras
import tensorflow as tf

import common
import data
import ops

VARIANT = "wgan"
WARMUP_ITERS, WARMUP_STEPS, WARMUP_EVERY = 100, 25, 500  # martinarjovsky/WassersteinGAN main.py


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # BatchNorm in the critic, as in the authors' DCGAN critic; clipping keeps it Lipschitz all the same.
    common.add_common_flags(parser, batch_size=64, steps=10000, norm="batch")
    parser.add_argument("--lr", type=float, default=5e-5, help="RMSProp learning rate alpha, both networks")
    parser.add_argument("--clip", type=float, default=0.01, help="clipping bound c for every critic weight")
    parser.add_argument("--n_critic", type=int, default=5, help="critic updates per generator update")
    parser.add_argument("--critic_warmup", action=argparse.BooleanOptionalAction, default=True,
                        help=f"{WARMUP_ITERS} critic updates for the first {WARMUP_STEPS} generator steps and every "
                             f"{WARMUP_EVERY}th (the authors' code, not the paper)")
    return common.parse_args(parser, VARIANT, argv)


# ------------------------------------------------------------------------------------------ the algorithm
def critic_loss(d_real, d_fake):
    """Per-sample D(fake) - D(real): minimising its mean maximises the Wasserstein estimate E[D(real)] - E[D(fake)]."""
    return tf.reshape(d_fake - d_real, [-1])


def generator_loss(d_fake):
    """Per-sample -D(fake): the generator maximises the critic's score of its samples."""
    return -tf.reshape(d_fake, [-1])


def clip_weights(variables, c):
    """Algorithm 1, line 7: w <- clip(w, -c, c) for EVERY critic variable (kernels, biases, BatchNorm's gamma and
    beta). The moving statistics are not trainable and not clipped, as in the authors' code (parameters only)."""
    for v in variables:
        v.assign(tf.clip_by_value(v, -c, c))


def critic_iters(step, n_critic, warmup):
    """Critic updates before generator step `step` (0-based): the authors' warm-up, else n_critic."""
    if warmup and (step < WARMUP_STEPS or step % WARMUP_EVERY == 0):
        return WARMUP_ITERS
    return n_critic


def clipped_share(variables, c):
    """Share of critic weights sitting at the bound: near 1 means clipping, not the loss, shapes the critic."""
    at_bound = tf.add_n([tf.reduce_sum(tf.cast(tf.abs(v) >= c * (1 - 1e-6), tf.float32)) for v in variables])
    return at_bound / float(sum(v.shape.num_elements() for v in variables))


def make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng):
    """Returns train_step(iterator, n_critic): one generator iteration of Algorithm 1, and its metrics."""
    batch = args.batch_size // strategy.num_replicas_in_sync  # per device
    mean = tf.nn.compute_average_loss  # sums per-sample values and divides by the GLOBAL batch size

    def critic_update(real):  # runs on each device
        fake = generator(rng.normal([batch, args.z_dim]), training=True)
        with tf.GradientTape() as tape:
            loss = mean(critic_loss(critic(real, training=True), critic(fake, training=True)))
        c_opt.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables))
        return {"critic_loss": loss, "wasserstein": -loss}

    def generator_update():
        with tf.GradientTape() as tape:
            fake = generator(rng.normal([batch, args.z_dim]), training=True)
            loss = mean(generator_loss(critic(fake, training=True)))
        g_opt.apply_gradients(zip(tape.gradient(loss, generator.trainable_variables), generator.trainable_variables))
        return {"generator_loss": loss}

    if args.xla:
        critic_update = tf.function(critic_update, jit_compile=True)
        generator_update = tf.function(generator_update, jit_compile=True)

    def reduce(per_device):
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_device.items()}

    @tf.function
    def critic_step(real):
        metrics = reduce(strategy.run(critic_update, args=(real,)))
        # Clipped after every critic update, across devices at once (cross-replica context).
        clip_weights(critic.trainable_variables, args.clip)
        return {**metrics, "clipped_share": clipped_share(critic.trainable_variables, args.clip)}

    @tf.function
    def generator_step():
        return reduce(strategy.run(generator_update))

    def train_step(iterator, n_critic):
        # (1) critic: n_critic updates on fresh real batches, maximising D(real) - D(fake), each then clipped
        for _ in range(n_critic):
            metrics = critic_step(next(iterator))
        # (2) generator: one update, maximising D(G(z))
        return {**metrics, **generator_step()}

    return train_step


# ------------------------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    run_dir, config = common.start_run(args, VARIANT)
    strategy = common.strategy()
    with strategy.scope():
        generator = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width)
        critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm)
        # Two optimizers: sharing one between the networks mixes their moment estimates. RMSProp, not Adam: the
        # paper found momentum-based optimizers unstable with a clipped critic. rho 0.99 and eps 1e-8 are the
        # defaults of torch.optim.RMSprop, which the authors' code uses (Keras' own are 0.9 and 1e-7).
        g_opt = keras.optimizers.RMSprop(args.lr, rho=0.99, epsilon=1e-8)
        c_opt = keras.optimizers.RMSprop(args.lr, rho=0.99, epsilon=1e-8)
        g_opt.build(generator.trainable_variables)  # create the slots now, so a restore fills them
        c_opt.build(critic.trainable_variables)
        rng = tf.random.Generator.from_seed(args.seed)  # z; its state is checkpointed
        step = tf.Variable(0, dtype=tf.int64, trainable=False)  # generator steps (optimizer.iterations is not:
        batches = tf.Variable(0, dtype=tf.int64, trainable=False)  # the critic's counts n_critic per step)
    ckpt = common.Checkpoints(run_dir, args.keep_ckpts, generator=generator, critic=critic, g_opt=g_opt,
                              c_opt=c_opt, rng=rng, step=step, batches=batches)
    if args.resume:
        print(f"resumed from {ckpt.restore_latest()} at step {int(step)}")
    dataset = data.make_dataset(args.dataset, args.data_dir, args.image_size, args.channels, args.batch_size,
                                seed=args.seed, start_batch=int(batches))  # continues the data order exactly
    evaluate = common.Evaluator(args) if args.eval_every else None  # keeps the best checkpoint in ckpt_best/
    common.save_config(run_dir, config)  # only now: bad data or an unavailable metric leave no run behind
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    train_step = make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng)
    noise = common.fixed_noise(args.seed, args.z_dim)
    log = common.Logger(run_dir, args.steps, int(step), args.log_every)
    print(f"{VARIANT}: generator {ops.count_params(generator):,} and critic {ops.count_params(critic):,} parameters; "
          f"run directory {run_dir}")
    stop = common.StopRequest()  # Ctrl-C ends the loop between steps, so the checkpoint below is exact
    try:
        while int(step) < args.steps and not stop.requested:
            n_critic = critic_iters(int(step), args.n_critic, args.critic_warmup)  # a pure function of the step
            metrics = train_step(iterator, n_critic)
            step.assign_add(1)
            batches.assign_add(n_critic)
            i = int(step)
            log.step(i, metrics, images_per_step=args.batch_size * n_critic)
            if i % args.sample_every == 0:
                common.save_samples(generator, noise, run_dir, i, log)
            if evaluate and i % args.eval_every == 0:  # before the periodic save, which holds the best score
                ckpt.save_if_best(i, evaluate(generator, i, log))
            if i % args.ckpt_every == 0:
                ckpt.save(i)
        ckpt.save(int(step))
        common.save_samples(generator, noise, run_dir, int(step), log)
    finally:
        stop.close()
        log.close()
    print(f"{'stopped' if stop.requested else 'finished'} at step {int(step)}; checkpoint in {run_dir}/ckpt")


if __name__ == "__main__":
    common.cli(main)

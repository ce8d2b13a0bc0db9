"""WGAN-GP: Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville 2017, "Improved Training of Wasserstein GANs".

Algorithm 1 of the paper: the WGAN critic and generator losses, with the weight clipping of WGAN replaced by a
gradient penalty lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] at random interpolates x_hat between real and fake
images; n_critic = 5 critic updates per generator update, Adam(1e-4, beta_1 = 0, beta_2 = 0.9), lambda = 10, and
no BatchNorm in the critic (layer normalisation instead, as the paper suggests).

    python wgan_gp.py                                   # Fashion-MNIST 32x32, the paper's settings
    python wgan_gp.py --steps 300 --sample_every 100    # a short CPU run (about 2 minutes on 2 cores)
    python wgan_gp.py --resume runs/wgan_gp-fashion_mnist-20261127-120000
    python sample.py runs/wgan_gp-fashion_mnist-20261127-120000
"""
import argparse

import keras
import tensorflow as tf

import common
import data
import ops

VARIANT = "wgan_gp"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # BatchNorm is not offered: it couples the samples of a batch, so the per-sample penalty would be wrong.
    common.add_common_flags(parser, batch_size=64, steps=10000, norm="layer", norms=("layer", "none"))
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate alpha, both networks")
    parser.add_argument("--beta1", type=float, default=0.0,
                        help="Adam beta_1 (Algorithm 1; the authors' MNIST/CIFAR scripts use 0.5)")
    parser.add_argument("--beta2", type=float, default=0.9, help="Adam beta_2")
    parser.add_argument("--n_critic", type=int, default=5, help="critic updates per generator update")
    parser.add_argument("--gp_weight", type=float, default=10.0, help="gradient penalty coefficient lambda")
    return common.parse_args(parser, VARIANT, argv)


# ------------------------------------------------------------------------------------------ the algorithm
def critic_loss(d_real, d_fake):
    """Per-sample D(fake) - D(real): minimising its mean maximises the Wasserstein estimate E[D(real)] - E[D(fake)]."""
    return tf.reshape(d_fake - d_real, [-1])


def generator_loss(d_fake):
    """Per-sample -D(fake): the generator maximises the critic's score of its samples."""
    return -tf.reshape(d_fake, [-1])


def interpolation_eps(rng, batch_size):
    """epsilon ~ U[0, 1], one per sample (Algorithm 1, line 4), shaped [B, 1, 1, 1] to broadcast over an image."""
    return rng.uniform([batch_size, 1, 1, 1], 0.0, 1.0)


def gradient_penalty(critic, real, fake, eps, target=1.0):
    """Per-sample (||grad D(x_hat)||_2 / target - 1)^2 at x_hat = eps * real + (1 - eps) * fake, and the norms.

    With the paper's target 1 this is (||grad|| - 1)^2. Another target is scaled as in TF-GAN and Karras et al.
    2018, (||grad|| - target)^2 / target^2, so that lambda keeps its meaning.
    """
    x_hat = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        d_hat = critic(x_hat, training=True)
    # d_hat's samples are independent (no BatchNorm), so the gradient of their sum is each sample's own gradient.
    grad = tf.cast(tape.gradient(d_hat, x_hat), tf.float32)
    # The norm runs over ALL non-batch axes (H, W, C); taking it over one axis is a common bug. The 1e-12 keeps
    # the gradient of sqrt finite where grad is exactly zero.
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=list(range(1, grad.shape.rank))) + 1e-12)
    return tf.square(norm / target - 1.0), norm


def make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng):
    """Returns train_step(iterator, n_critic): one generator iteration of Algorithm 1, and its metrics."""
    batch = args.batch_size // strategy.num_replicas_in_sync  # per device
    mean = tf.nn.compute_average_loss  # sums per-sample values and divides by the GLOBAL batch size

    def critic_update(real):  # runs on each device
        fake = generator(rng.normal([batch, args.z_dim]), training=True)
        eps = interpolation_eps(rng, batch)
        with tf.GradientTape() as tape:
            d_real, d_fake = critic(real, training=True), critic(fake, training=True)
            penalty, grad_norm = gradient_penalty(critic, real, fake, eps)
            loss = mean(critic_loss(d_real, d_fake) + args.gp_weight * penalty)
        c_opt.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables))
        return {"critic_loss": loss, "wasserstein": -mean(critic_loss(d_real, d_fake)),
                "gradient_penalty": mean(penalty), "grad_norm": mean(grad_norm)}

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
        return reduce(strategy.run(critic_update, args=(real,)))

    @tf.function
    def generator_step():
        return reduce(strategy.run(generator_update))

    def train_step(iterator, n_critic):
        # (1) critic: n_critic updates on fresh real batches, maximising D(real) - D(fake) - lambda * penalty
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
        # Two optimizers: sharing one between the networks mixes their moment estimates.
        g_opt = keras.optimizers.Adam(args.lr, beta_1=args.beta1, beta_2=args.beta2)
        c_opt = keras.optimizers.Adam(args.lr, beta_1=args.beta1, beta_2=args.beta2)
        g_opt.build(generator.trainable_variables)  # create the slots now, so a restore fills them
        c_opt.build(critic.trainable_variables)
        rng = tf.random.Generator.from_seed(args.seed)  # z and epsilon; its state is checkpointed
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
            metrics = train_step(iterator, args.n_critic)
            step.assign_add(1)
            batches.assign_add(args.n_critic)
            i = int(step)
            log.step(i, metrics, images_per_step=args.batch_size * args.n_critic)
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

"""DCGAN: Radford, Metz, Chintala 2015, "Unsupervised Representation Learning with Deep Convolutional GANs".

The original GAN game (Goodfellow et al. 2014) with the generator's non-saturating loss, on the DCGAN networks of
ops.py (BatchNorm in both, ReLU/tanh generator, LeakyReLU(0.2) discriminator, N(0, 0.02) initialisation):
one discriminator update per generator update, Adam(2e-4, beta_1 = 0.5), batch 128 as in the paper. The losses
are computed from logits with a numerically stable cross-entropy, never log(sigmoid(x)) by hand.

    python dcgan.py                                     # Fashion-MNIST 32x32, the paper's settings
    python dcgan.py --steps 300 --sample_every 100      # a short CPU run (about a minute on 2 cores)
    python dcgan.py --resume runs/dcgan-fashion_mnist-20261127-120000
    python sample.py runs/dcgan-fashion_mnist-20261127-120000
"""
import argparse

import keras
import tensorflow as tf

import common
import data
import ops

VARIANT = "dcgan"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # The paper's discriminator has BatchNorm on every layer but the input layer.
    common.add_common_flags(parser, batch_size=128, steps=10000, norm="batch")
    parser.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate, both networks")
    parser.add_argument("--beta1", type=float, default=0.5,
                        help="Adam beta_1 (the paper: 0.9 made training oscillate and unstable)")
    parser.add_argument("--beta2", type=float, default=0.999, help="Adam beta_2")
    return common.parse_args(parser, VARIANT, argv)


# ------------------------------------------------------------------------------------------ the algorithm
def critic_loss(d_real, d_fake):
    """Per-sample discriminator loss -log D(real) - log(1 - D(fake)), from logits (BCE: real -> 1, fake -> 0).

    The discriminator is called `critic` here as in wgan.py and wgan_gp.py, so that the three scripts diff cleanly.
    """
    bce = tf.nn.sigmoid_cross_entropy_with_logits
    return tf.reshape(bce(tf.ones_like(d_real), d_real) + bce(tf.zeros_like(d_fake), d_fake), [-1])


def generator_loss(d_fake):
    """Per-sample non-saturating generator loss -log D(fake) (BCE: fake -> 1), not the saturating log(1 - D(fake))."""
    return tf.reshape(tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(d_fake), d_fake), [-1])


def make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng):
    """Returns train_step(iterator): one discriminator and one generator update, and their metrics."""
    batch = args.batch_size // strategy.num_replicas_in_sync  # per device
    mean = tf.nn.compute_average_loss  # sums per-sample values and divides by the GLOBAL batch size

    def critic_update(real):  # runs on each device
        fake = generator(rng.normal([batch, args.z_dim]), training=True)
        with tf.GradientTape() as tape:
            # Real and fake go through the discriminator as separate batches, as in the reference code, so each
            # BatchNorm batch is all real or all fake.
            d_real, d_fake = critic(real, training=True), critic(fake, training=True)
            loss = mean(critic_loss(d_real, d_fake))
        c_opt.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables))
        return {"critic_loss": loss, "d_real": mean(tf.sigmoid(tf.reshape(d_real, [-1]))),
                "d_fake": mean(tf.sigmoid(tf.reshape(d_fake, [-1])))}

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

    def train_step(iterator):
        # (1) discriminator: one update, maximising log D(real) + log(1 - D(G(z)))
        metrics = critic_step(next(iterator))
        # (2) generator: one update, maximising log D(G(z))
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
        rng = tf.random.Generator.from_seed(args.seed)  # z; its state is checkpointed
        step = tf.Variable(0, dtype=tf.int64, trainable=False)  # generator steps, the run's clock
        batches = tf.Variable(0, dtype=tf.int64, trainable=False)  # real batches used: the data position
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
            metrics = train_step(iterator)
            step.assign_add(1)
            batches.assign_add(1)
            i = int(step)
            log.step(i, metrics, images_per_step=args.batch_size)
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

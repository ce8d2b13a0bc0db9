"""DCGAN: Radford, Metz, Chintala 2015, "Unsupervised Representation Learning with Deep Convolutional GANs".

The original GAN game (Goodfellow et al. 2014) with the generator's non-saturating loss, on the DCGAN networks of
ops.py (BatchNorm in both, the generator's first one per unit of z's projection as in Radford's Newmu/dcgan_code,
ReLU/tanh generator, LeakyReLU(0.2) discriminator, N(0, 0.02) initialisation): one discriminator update per
generator update, Adam(2e-4, beta_1 = 0.5), batch 128 as in the paper. The losses
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
import devices
import metrics
import ops
import training

VARIANT = "dcgan"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # The paper's discriminator has BatchNorm on every layer but the input layer; the generator's first BatchNorm is
    # per unit of z's projection, as in Newmu/dcgan_code, the paper's first author's code.
    training_flags = common.add_common_flags(parser, batch_size=128, steps=10000, norm="batch", first_bn="feature")
    add = training_flags.add_argument
    add("--lr", type=float, default=2e-4, help="Adam learning rate, both networks")
    add("--beta1", type=float, default=0.5, help="Adam beta_1 (the paper: 0.9 oscillates and is unstable)")
    add("--beta2", type=float, default=0.999, help="Adam beta_2")
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


def make_optimizers(args, generator, critic):
    """Two Adams (sharing one between the networks mixes their moment estimates); epsilon 1e-8 as in the reference
    code, TF1's and PyTorch's default (Keras' is 1e-7)."""
    def adam():
        return keras.optimizers.Adam(training.learning_rate(args), beta_1=args.beta1, beta_2=args.beta2, epsilon=1e-8)
    return devices.prepare_optimizers(args, (adam(), generator), (adam(), critic))


def make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng, progress):
    """Returns train_step(iterator, steps): `steps` generator steps (a tensor, so any count runs one trace) of one
    discriminator and one generator update each, in one compiled call."""
    batch = args.batch_size // strategy.num_replicas_in_sync  # per device
    mean = tf.nn.compute_average_loss  # sums per-sample values and divides by the GLOBAL batch size

    def critic_update(real):  # runs on each device, with its own slice of the batch and its own z
        fake = generator(rng.normal([batch, args.z_dim]), training=True)
        with tf.GradientTape() as tape:
            # Real and fake go through the discriminator as separate batches, as in the reference code, so each
            # BatchNorm batch is all real or all fake.
            d_real, d_fake = critic(real, training=True), critic(fake, training=True)
            loss = mean(critic_loss(d_real, d_fake))
            scaled = c_opt.scale_loss(loss)  # fp16: times the loss scale, which apply_gradients divides out
        c_opt.apply_gradients(zip(tape.gradient(scaled, critic.trainable_variables), critic.trainable_variables))
        return {"critic_loss": loss, "d_real": mean(tf.sigmoid(tf.reshape(d_real, [-1]))),
                "d_fake": mean(tf.sigmoid(tf.reshape(d_fake, [-1])))}

    def generator_update():
        with tf.GradientTape() as tape:
            fake = generator(rng.normal([batch, args.z_dim]), training=True)
            loss = mean(generator_loss(critic(fake, training=True)))
            scaled = g_opt.scale_loss(loss)
        g_opt.apply_gradients(zip(tape.gradient(scaled, generator.trainable_variables), generator.trainable_variables))
        return {"generator_loss": loss}

    def update(real):  # on each device, with its own slice of the batch
        # (1) discriminator: one update, maximising log D(real) + log(1 - D(G(z)))
        logged = critic_update(real)
        # (2) generator: one update, maximising log D(G(z))
        logged.update(generator_update())
        return logged

    def step(real):  # (1) and (2) on every device, then the step's bookkeeping
        progress.advance(devices.reduce_metrics(strategy, strategy.run(update, args=(real,))), critic_updates=1)

    if args.xla:  # one device only (devices.make_strategy): the whole step, bookkeeping too, in one XLA computation
        step = tf.function(step, jit_compile=True)

    @tf.function
    def train_step(iterator, steps):
        for _ in tf.range(steps):
            step(next(iterator))
        return progress.logged()  # the last step's values

    return train_step


# ------------------------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    strategy = devices.make_strategy(args)  # first: a multi-worker strategy must precede any other TF work
    devices.set_precision(args.precision, xla=args.xla)  # before the networks are built
    run = common.Run(args, VARIANT, strategy)  # seeds, run directory (written below)
    with strategy.scope():
        generator = ops.make_generator(args.image_size, args.channels, args.z_dim, args.width, arch=args.arch,
                                       first_bn=args.first_bn)
        critic = ops.make_critic(args.image_size, args.channels, args.width, norm=args.norm, arch=args.arch)
        g_opt, c_opt = make_optimizers(args, generator, critic)
        rng = tf.random.Generator.from_seed(args.seed)  # z, a stream per device; checkpointed
        progress = training.Progress(generator=g_opt, critic=c_opt)  # step and data position, kept on the device
    ckpt = run.checkpoints(generator=generator, critic=critic, g_opt=g_opt, c_opt=c_opt, rng=rng, **progress.state)
    if args.resume:
        path = ckpt.restore_latest()  # None for a run stopped before its first checkpoint: it starts over
        print(f"resumed from {path or 'the start'} at step {int(progress.step.numpy())}")
    # Continues the data order exactly; each device reads its slice of every global batch.
    dataset = devices.distribute_dataset(strategy, args, start_batch=int(progress.batches.numpy()))
    evaluate = metrics.Evaluator(args) if args.eval_every else None  # keeps the best checkpoint in ckpt_best/
    run.save_config()  # only now: bad data or an unavailable metric leave no run behind
    train_step = make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng, progress)
    print(f"{VARIANT}: generator {ops.count_params(generator):,} and critic {ops.count_params(critic):,} parameters "
          f"on {strategy.num_replicas_in_sync} device(s), {args.precision}; run directory {run.dir}")
    iterator = iter(dataset)
    with training.Loop(run, ckpt, progress, generator, evaluate) as loop:
        for steps in loop.calls():  # up to --steps_per_call steps per call, cut at log/sample/checkpoint steps
            loop.end_call(train_step(iterator, steps))
    print(f"{'finished' if loop.step >= args.steps else 'stopped'} at step {loop.step}; checkpoints in {run.dir}/ckpt")


if __name__ == "__main__":
    common.cli(main)

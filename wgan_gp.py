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
import devices
import metrics
import ops
import training

VARIANT = "wgan_gp"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # BatchNorm is not offered: it couples the samples of a batch, so the per-sample penalty would be wrong.
    # The first BatchNorm per channel, as the authors' DCGAN generator in gan_64x64.py (gan_cifar.py's is per unit).
    training_flags = common.add_common_flags(parser, batch_size=64, steps=10000, norm="layer", norms=("layer", "none"),
                                             first_bn="channel")
    add = training_flags.add_argument
    add("--lr", type=float, default=1e-4, help="Adam learning rate alpha, both networks")
    add("--beta1", type=float, default=0.0, help="Adam beta_1 (Algorithm 1; the authors' MNIST/CIFAR code: 0.5)")
    add("--beta2", type=float, default=0.9, help="Adam beta_2")
    add("--n_critic", type=int, default=5, help="critic updates per generator update")
    add("--gp_weight", type=float, default=10.0, help="gradient penalty coefficient lambda")
    add("--gen_batch_multiple", type=int, default=1,
        help="G's update draws this many times --batch_size samples (the authors' CIFAR-10 ResNet code: 2)")
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


def gradient_penalty(critic, real, fake, eps, target=1.0, scale=1.0):
    """Per-sample (||grad D(x_hat)||_2 / target - 1)^2 at x_hat = eps * real + (1 - eps) * fake, and the norms.

    With the paper's target 1 this is (||grad|| - 1)^2. Another target is scaled as in TF-GAN and Karras et al.
    2018, (||grad|| - target)^2 / target^2, so that lambda keeps its meaning. `scale` is fp16's loss scale: the
    inner backward pass runs on D * scale, so that its float16 gradients do not underflow, and is unscaled in
    float32 before the norm (the PyTorch AMP notes' recipe, "gradient penalty"); an overflow gives Inf, and the
    loss-scaling optimizer then skips the update and lowers the scale.
    """
    x_hat = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        d_hat = critic(x_hat, training=True) * scale
    # d_hat's samples are independent (no BatchNorm), so the gradient of their sum is each sample's own gradient.
    grad = tf.cast(tape.gradient(d_hat, x_hat), tf.float32) / scale
    # The norm runs over ALL non-batch axes (H, W, C); taking it over one axis is a common bug. The 1e-12 keeps
    # the gradient of sqrt finite where grad is exactly zero.
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=list(range(1, grad.shape.rank))) + 1e-12)
    return tf.square(norm / target - 1.0), norm


def make_optimizers(args, generator, critic):
    """Two Adams, as in Algorithm 1 (sharing one between the networks mixes their moment estimates); epsilon 1e-8
    as in the authors' TF1 code (Keras' default is 1e-7; its Adam has TF1's epsilon-hat form)."""
    def adam():
        return keras.optimizers.Adam(training.learning_rate(args), beta_1=args.beta1, beta_2=args.beta2, epsilon=1e-8)
    return devices.prepare_optimizers(args, (adam(), generator), (adam(), critic))


def make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng, progress):
    """Returns train_step(iterator, steps): `steps` generator iterations of Algorithm 1 (a tensor, so any count runs
    one trace) in one compiled call."""
    batch = args.batch_size // strategy.num_replicas_in_sync  # per device
    mean = tf.nn.compute_average_loss  # sums per-sample values and divides by the GLOBAL batch size

    def critic_update(real):  # runs on each device, with its own slice of the batch and its own z and epsilon
        fake = generator(rng.normal([batch, args.z_dim]), training=True)
        eps = interpolation_eps(rng, batch)
        with tf.GradientTape() as tape:
            d_real, d_fake = critic(real, training=True), critic(fake, training=True)
            penalty, grad_norm = gradient_penalty(critic, real, fake, eps, scale=devices.loss_scale(c_opt))
            loss = mean(critic_loss(d_real, d_fake) + args.gp_weight * penalty)
            scaled = c_opt.scale_loss(loss)  # fp16: times the loss scale, which apply_gradients divides out
        c_opt.apply_gradients(zip(tape.gradient(scaled, critic.trainable_variables), critic.trainable_variables))
        return {"critic_loss": loss, "wasserstein": -mean(critic_loss(d_real, d_fake)),
                "gradient_penalty": mean(penalty), "grad_norm": mean(grad_norm)}

    def generator_update():
        with tf.GradientTape() as tape:
            # compute_average_loss divides by this batch's global size, --gen_batch_multiple x --batch_size
            fake = generator(rng.normal([batch * args.gen_batch_multiple, args.z_dim]), training=True)
            loss = mean(generator_loss(critic(fake, training=True)))
            scaled = g_opt.scale_loss(loss)
        g_opt.apply_gradients(zip(tape.gradient(scaled, generator.trainable_variables), generator.trainable_variables))
        return {"generator_loss": loss}

    def critic_step(real):  # (1) one critic update on each device
        return strategy.run(critic_update, args=(real,))

    def generator_step(logged, n_critic):  # (2) one generator update, then the step's bookkeeping
        logged = devices.reduce_metrics(strategy, {**logged, **strategy.run(generator_update)})
        progress.advance(logged, critic_updates=n_critic)

    if args.xla:  # one device only (devices.make_strategy): each part of the step in one XLA computation
        critic_step = tf.function(critic_step, jit_compile=True)
        generator_step = tf.function(generator_step, jit_compile=True)

    @tf.function
    def train_step(iterator, steps):
        for _ in tf.range(steps):
            # (1) critic: n_critic updates on fresh real batches, maximising D(real) - D(fake) - lambda * penalty.
            #     The last update's values are the ones logged, reduced over the devices once per step.
            logged = training.repeat_update(critic_step, iterator, args.n_critic)
            # (2) generator: one update, maximising D(G(z))
            generator_step(logged, args.n_critic)
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
        rng = tf.random.Generator.from_seed(args.seed)  # z and epsilon, a stream per device; checkpointed
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

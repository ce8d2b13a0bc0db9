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

import tensorflow as tf

import common
import devices
import metrics
import ops
import training

VARIANT = "wgan"
WARMUP_ITERS, WARMUP_STEPS, WARMUP_EVERY = 100, 25, 500  # martinarjovsky/WassersteinGAN main.py


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # BatchNorm in the critic, as in the authors' DCGAN critic; clipping keeps it Lipschitz all the same.
    # The WGAN authors' DCGAN_G normalises its first layer per channel (a 4x4 transposed conv, then BatchNorm2d).
    training_flags = common.add_common_flags(parser, batch_size=64, steps=10000, norm="batch", first_bn="channel")
    add = training_flags.add_argument
    add("--lr", type=float, default=5e-5, help="RMSProp learning rate alpha, both networks")
    add("--clip", type=float, default=0.01, help="clipping bound c for every critic weight")
    add("--n_critic", type=int, default=5, help="critic updates per generator update")
    add("--critic_warmup", action=argparse.BooleanOptionalAction, default=True,
        help=f"{WARMUP_ITERS} critic updates for the first {WARMUP_STEPS} and every {WARMUP_EVERY}th generator step "
             "(the authors' code)")
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
    """Critic updates before generator step `step` (0-based): the authors' warm-up, else n_critic. With the warm-up,
    a number for a number and a tensor for the step counter inside the compiled step; without it, n_critic."""
    if not warmup:
        return n_critic
    warm = (step < WARMUP_STEPS) | (step % WARMUP_EVERY == 0)
    return tf.where(warm, WARMUP_ITERS, n_critic) if tf.is_tensor(warm) else WARMUP_ITERS if warm else n_critic


def clipped_share(variables, c):
    """Share of critic weights sitting at the bound: near 1 means clipping, not the loss, shapes the critic."""
    at_bound = tf.add_n([tf.reduce_sum(tf.cast(tf.abs(v) >= c * (1 - 1e-6), tf.float32)) for v in variables])
    return at_bound / float(sum(v.shape.num_elements() for v in variables))


def make_optimizers(args, generator, critic):
    """Two RMSProps (sharing one between the networks mixes their moment estimates), not Adam: the paper found
    momentum-based optimizers unstable with a clipped critic. ops.RMSprop is torch.optim.RMSprop, which the authors'
    code uses (rho 0.99, eps 1e-8 added to sqrt(v)); Keras' own adds eps under the root, which on the tiny gradients
    of a clipped critic turns the normalised step into a much smaller one."""
    return devices.prepare_optimizers(args, (ops.RMSprop(training.learning_rate(args)), generator),
                                    (ops.RMSprop(training.learning_rate(args)), critic))


def make_train_step(args, strategy, generator, critic, g_opt, c_opt, rng, progress):
    """Returns train_step(iterator, steps): `steps` generator iterations of Algorithm 1 (a tensor, so any count runs
    one trace) in one compiled call."""
    batch = args.batch_size // strategy.num_replicas_in_sync  # per device
    mean = tf.nn.compute_average_loss  # sums per-sample values and divides by the GLOBAL batch size

    def critic_update(real):  # runs on each device, with its own slice of the batch and its own z
        fake = generator(rng.normal([batch, args.z_dim]), training=True)
        with tf.GradientTape() as tape:
            loss = mean(critic_loss(critic(real, training=True), critic(fake, training=True)))
            scaled = c_opt.scale_loss(loss)  # fp16: times the loss scale, which apply_gradients divides out
        c_opt.apply_gradients(zip(tape.gradient(scaled, critic.trainable_variables), critic.trainable_variables))
        return {"critic_loss": loss, "wasserstein": -loss}

    def generator_update():
        with tf.GradientTape() as tape:
            fake = generator(rng.normal([batch, args.z_dim]), training=True)
            loss = mean(generator_loss(critic(fake, training=True)))
            scaled = g_opt.scale_loss(loss)
        g_opt.apply_gradients(zip(tape.gradient(scaled, generator.trainable_variables), generator.trainable_variables))
        return {"generator_loss": loss}

    def critic_step(real):  # (1) one critic update on each device
        logged = strategy.run(critic_update, args=(real,))
        # Algorithm 1, line 7, after every critic update, on every device's copy at once (cross-replica context).
        clip_weights(critic.trainable_variables, args.clip)
        return logged

    def generator_step(logged, n_critic):  # (2) one generator update, then the step's bookkeeping
        logged = devices.reduce_metrics(strategy, {**logged, **strategy.run(generator_update)})
        logged["clipped_share"] = clipped_share(critic.trainable_variables, args.clip)  # the same on every copy
        progress.advance(logged, critic_updates=n_critic)

    if args.xla:  # one device only (devices.make_strategy): each part of the step in one XLA computation
        critic_step = tf.function(critic_step, jit_compile=True)
        generator_step = tf.function(generator_step, jit_compile=True)

    @tf.function
    def train_step(iterator, steps):
        for _ in tf.range(steps):
            n_critic = critic_iters(progress.step, args.n_critic, args.critic_warmup)  # 5, or 100 in the warm-up
            # (1) critic: n_critic updates on fresh real batches, maximising D(real) - D(fake), each then clipped.
            #     The last update's values are the ones logged, reduced over the devices once per step.
            logged = training.repeat_update(critic_step, iterator, n_critic, fewest=min(args.n_critic, WARMUP_ITERS))
            # (2) generator: one update, maximising D(G(z))
            generator_step(logged, n_critic)
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

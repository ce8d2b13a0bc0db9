"""The DCGAN backbone shared by all three variants, so that they are compared on equal networks.

Radford et al. 2015 (DCGAN), section 3 and figure 1:
  generator  z -> dense projection -> [transposed conv 4x4/2, BatchNorm, ReLU]* -> transposed conv -> tanh
  critic     x -> conv 4x4/2, LeakyReLU(0.2) -> [conv 4x4/2, norm, LeakyReLU(0.2)]* -> dense -> one logit
no pooling, no hidden fully connected layers, weights N(0, 0.02), BatchNorm gamma N(1, 0.02) and beta 0.

Both networks scale with the image size: the spatial size halves (critic) or doubles (generator) between a
small base (4x4 for 32/64/128, 7x7 for 28) and the image, and the channel count doubles with every halving, so
`width` 64 gives pytorch/examples' 512-256-128-64 generator at 64x64 (the paper's 1024-512-256-128 is width 128)
and the familiar 256-128-64 one at 32x32.

The critic's normalisation is a choice because the variants need different ones: DCGAN and WGAN use BatchNorm,
WGAN-GP must not (its penalty is per sample, and BatchNorm couples the samples of a batch; Gulrajani et al. 2017,
section 4 suggests layer normalisation instead).
"""
import math

import keras
import tensorflow as tf

NORMS = ("batch", "layer", "none")


def conv_init():
    return keras.initializers.RandomNormal(0.0, 0.02)


def base_size(image_size):
    """The smallest spatial size of both networks: image_size = base * 2**k with k >= 1 and base in 3..7."""
    size, ups = image_size, 0
    while size % 2 == 0 and size > 7:
        size, ups = size // 2, ups + 1
    if ups == 0 or not 3 <= size <= 7:  # 36 or 100 would give a base of 9 or 25: refused, not built
        raise ValueError(
            f"--image_size {image_size} does not fit the DCGAN backbone; use a base of 3 to 7 times a power of two "
            "(e.g. 28, 32, 64, 128).")
    return size, ups


class LayerNorm(keras.layers.Layer):
    """Layer normalisation over (H, W, C) of each sample, with a scale and offset per channel.

    This is the normalisation of the WGAN-GP authors' code (tflib's Layernorm over axes [1, 2, 3]); Keras'
    LayerNormalization(axis=[1, 2, 3]) would instead learn a scale for every pixel, tying the critic to one size.
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        # float32 under mixed precision too: the statistics of bfloat16/float16 activations lose too much (the next
        # layer casts the output back to the compute dtype), as Keras' BatchNormalization does internally.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="beta")

    def call(self, x):
        mean, var = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
        # As tflib does it (tf.nn.batch_normalization): the per-sample, per-channel scale and shift are folded
        # first, so the full-size tensor is touched twice (x * scale + shift), not four times, forward and backward.
        scale = tf.math.rsqrt(var + self.epsilon) * self.gamma
        return x * scale + (self.beta - mean * scale)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


class LeakyReLU(keras.layers.LeakyReLU):
    """Keras' LeakyReLU, whose gradient is computed in float32 when it runs in bfloat16 on a CPU.

    TensorFlow's CPU kernel of the bfloat16 LeakyReLU gradient is 5-6x slower than casting to float32 and back
    (2.8 against 0.49 ms forward and backward on a [64, 16, 16, 64] batch; AMD EPYC with AVX512_BF16), so Keras'
    own layer spent an eighth of a bfloat16 DCGAN step's op time there. The values are the same up to one bfloat16
    rounding of the slope; float32, float16 and every GPU use Keras' layer unchanged. Differentiable twice
    (LeakyReluGrad has a gradient), as WGAN-GP's penalty needs.
    """

    def call(self, x):
        if x.dtype != tf.bfloat16 or tf.config.list_logical_devices("GPU"):
            return super().call(x)

        @tf.custom_gradient
        def leaky_relu(x):
            def gradient(dy):
                dx = tf.raw_ops.LeakyReluGrad(gradients=tf.cast(dy, tf.float32), features=tf.cast(x, tf.float32),
                                              alpha=self.negative_slope)
                return tf.cast(dx, x.dtype)
            return tf.nn.leaky_relu(x, self.negative_slope), gradient
        return leaky_relu(x)


class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, trained with one computation of the statistics for any number of devices.

    On one device, training runs TensorFlow's fused kernel: Keras 3 composes batch normalisation from about ten
    separate operations (moments, then scale and shift, and as many again backward); TensorFlow's FusedBatchNormV3
    does each direction in one kernel, 1.6-3.8x faster on a CPU at DCGAN's layers at batch 64 (profile_step.py
    --batchnorm; only on tensors of a few hundred values is oneDNN's kernel the slower, see docs/speed.md; on a GPU
    the same op is cuDNN's fused batch norm, one kernel each way), and it takes bfloat16/float16 activations without
    casting them to float32 (statistics are still accumulated in float32).

    On several devices (synchronized=True, inside a multi-replica strategy) the statistics are those of the global
    batch, with ONE all-reduce per layer call of [sum, sum of squares, count] (Keras issues three, one per quantity:
    each a collective of its own between GPUs, where latency, not size, is the cost).

    Both normalise by the batch's biased variance and update the moving variance with the unbiased one (n / (n - 1)
    larger, n = global batch x height x width), as in PyTorch, the DCGAN and WGAN authors' framework, and in TF1's
    fused BatchNorm, so a run's statistics do not depend on its device count. Inference uses Keras' own computation.
    """

    def call(self, inputs, training=None, mask=None):
        if (not training or mask is not None or not (self.center and self.scale) or len(inputs.shape) != 4
                or self.axis not in (-1, 3)):
            return super().call(inputs, training=training, mask=mask)
        context = tf.distribute.get_replica_context()  # None in a cross-replica context
        if self.synchronized and context is not None and context.num_replicas_in_sync > 1:
            return self._synchronized(inputs, context)
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=self.gamma, offset=self.beta, mean=self.moving_mean, variance=self.moving_variance,
            epsilon=self.epsilon, exponential_avg_factor=1.0 - self.momentum, data_format="NHWC", is_training=True)
        self.moving_mean.assign(mean)  # the op returns the moving averages themselves: momentum m + batch (1 - m)
        self.moving_variance.assign(variance)
        return y

    def _synchronized(self, inputs, context):
        x = tf.cast(inputs, tf.float32)  # statistics of float16/bfloat16 activations in float32, as Keras does
        channels = x.shape[-1]
        # Sums of x - shift, with the moving mean as the shift (the same on every device): E[x^2] - E[x]^2 then
        # loses little to cancellation, also where a channel's mean is large against its spread.
        shift = tf.stop_gradient(self.moving_mean)
        centred = x - shift
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        local = tf.concat([tf.reduce_sum(centred, [0, 1, 2]), tf.reduce_sum(tf.square(centred), [0, 1, 2]),
                           count[None]], axis=0)
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)  # differentiable: gradients are all-reduced
        n = total[-1]
        shifted_mean = total[:channels] / n
        variance = tf.maximum(total[channels:2 * channels] / n - tf.square(shifted_mean), 0.0)
        mean = shifted_mean + shift
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + tf.stop_gradient(mean) * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + tf.stop_gradient(variance * n / (n - 1)) * (1.0 - m))
        y = tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, self.epsilon)
        return tf.cast(y, self.compute_dtype)


def batch_norm():
    # Keras' default momentum 0.99 averages over ~100 steps; PyTorch's DCGAN uses 0.1 in its convention (= 0.9 here).
    # 0.9 follows the reference code, so that moving statistics track the generator closely when sampling.
    # epsilon 1e-5: dcgan.torch's and PyTorch's (Newmu/dcgan_code: 1e-8); Keras' default 1e-3 is in no reference
    # code (its effect against a plain Keras DCGAN: docs/dcgan_gap.md).
    # synchronized: on several devices (built inside a multi-device strategy's scope) the batch statistics are
    # those of the global batch, as on one device, and every device keeps the same moving statistics. Only then:
    # on one device it would cost 13% of DCGAN's step time on a CPU for nothing.
    several = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return BatchNormalization(
        momentum=0.9, epsilon=1e-5, gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02),
        synchronized=several)


def norm_layer(norm):
    if norm == "batch":
        return batch_norm()
    if norm == "layer":
        return LayerNorm()
    if norm == "none":
        return None
    raise ValueError(f"unknown normalisation {norm!r}; choose one of {', '.join(NORMS)}")


# ------------------------------------------------------------------------------------------- architectures
# --arch: the networks of the papers' architecture experiments (WGAN section 4.3, Figs. 5-7; WGAN-GP section 5.2,
# Fig. 2, whose code is gan_64x64.py) and WGAN-GP's CIFAR-10 ResNet (gan_cifar_resnet.py, paper appendix F).
ARCHS = ("dcgan", "nobn_g", "mlp_g", "no_norm", "tanh", "resnet")
# The generator's first BatchNorm, on the projection of z (archs with BatchNorm in G: dcgan, tanh). The DCGAN
# authors' two codebases differ: Newmu/dcgan_code (Radford's) normalises each of the projection's units on its own,
# `relu(batchnorm(T.dot(Z, w), g, b))` with a gain and a bias per unit (`gain_ifn((ngf*8*4*4))`), as does WGAN-GP's
# gan_cifar.py (`Batchnorm(..., [0], output)` before the reshape); dcgan.torch (Chintala's), pytorch/examples and
# the WGAN authors' DCGAN_G project with a 4x4 transposed conv and normalise per channel over the 4x4 positions.
FIRST_BNS = ("feature", "channel")
MLP_UNITS, MLP_LAYERS = 512, 4


def check_arch(arch, image_size):
    """ValueError with one sentence if `arch` cannot be built at `image_size`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if arch == "resnet" and image_size != 32:
        raise ValueError(f"--arch resnet is WGAN-GP's CIFAR-10 ResNet, built for 32x32 images only, not "
                         f"--image_size {image_size}; use --image_size 32.")
    base_size(image_size)


def make_generator(image_size=32, channels=1, z_dim=100, width=64, arch="dcgan", first_bn="channel"):
    """z [B, z_dim] -> images [B, image_size, image_size, channels] in [-1, 1] (float32 output).

    first_bn (FIRST_BNS, above): the first BatchNorm per unit of the projection or per channel."""
    check_arch(arch, image_size)
    if first_bn not in FIRST_BNS:
        raise ValueError(f"unknown first BatchNorm {first_bn!r}; choose one of {', '.join(FIRST_BNS)}")
    if arch == "resnet":
        return resnet_generator(channels, z_dim, width)
    if arch == "mlp_g":
        return mlp_generator(image_size, channels, z_dim)
    base, ups = base_size(image_size)
    # nobn_g keeps `width` filters at every layer (WGAN section 4.3: "constant number of filters"; its authors'
    # --noBN code keeps the pyramid), with DCGAN's N(0, 0.02) init as the WGAN authors' code (WGAN-GP's
    # WGANPaper_CrippledDCGANGenerator uses tflib's default init); no_norm and nobn_g have biases instead of BN.
    norm = arch in ("dcgan", "tanh")
    filters = width if arch == "nobn_g" else width * 2 ** (ups - 1)

    def block(x):
        x = batch_norm()(x) if norm else x
        return keras.layers.Activation("tanh")(x) if arch == "tanh" else keras.layers.ReLU()(x)
    z = keras.Input((z_dim,), name="z")
    # Project and reshape: z -> [B, base, base, filters] (the paper's first "fractionally-strided" layer).
    x = keras.layers.Dense(base * base * filters, use_bias=not norm, kernel_initializer=conv_init())(z)
    per_unit = norm and first_bn == "feature"
    if per_unit:
        # Statistics per unit over the batch alone. Laid out as [B, 1, 1, units], so that BatchNormalization's fused
        # kernel and its one-all-reduce synchronized path (both 4-d only) take it, as they take every other layer.
        x = block(keras.layers.Reshape((1, 1, base * base * filters))(x))
    x = keras.layers.Reshape((base, base, filters))(x)
    if not per_unit:
        x = block(x)
    for _ in range(ups - 1):
        if arch != "nobn_g":
            filters //= 2
        x = keras.layers.Conv2DTranspose(filters, 4, 2, padding="same", use_bias=not norm,
                                         kernel_initializer=conv_init())(x)
        x = block(x)
    # Output layer: no BatchNorm (the paper: it caused sample oscillation), tanh to match data in [-1, 1].
    x = keras.layers.Conv2DTranspose(channels, 4, 2, padding="same", kernel_initializer=conv_init())(x)
    x = keras.layers.Activation("tanh", dtype="float32")(x)
    return keras.Model(z, x, name="generator")


def mlp_generator(image_size, channels, z_dim):
    """WGAN-GP's FCGenerator (gan_64x64.py): 4 ReLU layers of 512 units, a linear layer to the pixels, tanh; tflib's
    initialisation: 'he' for the ReLU layers (uniform, std sqrt(2 / fan_in) = Keras' He uniform), the default
    'glorot' for the output layer (std sqrt(2 / (fan_in + fan_out)) = Glorot uniform). (The WGAN authors' MLP_G has
    3 hidden layers and no tanh; the WGAN-GP figure's is followed.)"""
    z = keras.Input((z_dim,), name="z")
    x = z
    for _ in range(MLP_LAYERS):
        x = keras.layers.Dense(MLP_UNITS, activation="relu", kernel_initializer="he_uniform")(x)
    x = keras.layers.Dense(image_size * image_size * channels, kernel_initializer="glorot_uniform")(x)
    x = keras.layers.Reshape((image_size, image_size, channels))(x)
    x = keras.layers.Activation("tanh", dtype="float32")(x)
    return keras.Model(z, x, name="generator")


def make_critic(image_size=32, channels=1, width=64, norm="batch", arch="dcgan"):
    """images [B, H, W, C] -> one unbounded score per image [B, 1] (a logit for DCGAN, a critic value for WGANs).

    The critic is DCGAN's for dcgan, nobn_g and mlp_g (both papers change only the generator there); no_norm drops
    `norm`, tanh swaps LeakyReLU for tanh, resnet is WGAN-GP's ResNet critic."""
    check_arch(arch, image_size)
    norm_layer(norm)  # validates the name before building anything
    if arch == "resnet":
        return resnet_critic(channels, width, norm)
    if arch == "no_norm":
        norm = "none"
    base, ups = base_size(image_size)

    def activation(x):
        return keras.layers.Activation("tanh")(x) if arch == "tanh" else LeakyReLU(0.2)(x)
    x_in = keras.Input((image_size, image_size, channels), name="image")
    # First layer: no normalisation (the paper: BatchNorm on the input layer caused instability).
    x = keras.layers.Conv2D(width, 4, 2, padding="same", kernel_initializer=conv_init())(x_in)
    x = activation(x)
    filters = width
    for _ in range(ups - 1):
        filters *= 2
        x = keras.layers.Conv2D(filters, 4, 2, padding="same", use_bias=(norm == "none"),
                                kernel_initializer=conv_init())(x)
        layer = norm_layer(norm)
        if layer is not None:
            x = layer(x)
        x = activation(x)
    # [B, base, base, filters] -> [B, 1]: a dense layer over the last feature map, equivalent to the paper's
    # final base x base convolution.
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(1, kernel_initializer=conv_init(), dtype="float32")(x)
    return keras.Model(x_in, x, name="critic")


# WGAN-GP's CIFAR-10 ResNet, layer for layer as gan_cifar_resnet.py with CONDITIONAL = ACGAN = False (the unsupervised
# model of Table 3, IS 7.86), in NHWC. Where the paper's appendix F and the code differ, the code is followed: the
# generator's "up" blocks upsample in their FIRST convolution (and the shortcut), the appendix says the second.
# tflib's initialisation: weights uniform with std sqrt(4 / (fan_in + fan_out)) (he_init, fan = channels x k^2)
# or sqrt(2 / (fan_in + fan_out)) (1x1 shortcuts, the generator's output conv, the Linear layers); biases 0, on
# every conv, also before BatchNorm as in the code. BatchNorm as tflib's: scale 1, offset 0.
def tflib_init(he=True):
    return keras.initializers.VarianceScaling(2.0 if he else 1.0, mode="fan_avg", distribution="uniform")


def conv3(filters, he=True, size=3):
    return keras.layers.Conv2D(filters, size, padding="same", kernel_initializer=tflib_init(he))


def mean_pool(x):
    """2x2 mean pooling: tflib's add_n of the four strided slices / 4."""
    return keras.layers.AveragePooling2D(2)(x)


def upsample(x):
    """Nearest 2x upsampling: tflib's concat of 4 copies then depth_to_space(2)."""
    return keras.layers.UpSampling2D(2, interpolation="nearest")(x)


def resnet_norm(norm):
    """The blocks' N1/N2: tflib's BatchNorm (generator), or the critic's --norm (the authors' NORMALIZATION_D:
    False, i.e. `none`, in the published model; True gives tflib's Layernorm)."""
    if norm != "batch":
        return norm_layer(norm)
    layer = batch_norm()
    layer.gamma_initializer = keras.initializers.Ones()  # tflib: scale 1 (DCGAN's N(1, 0.02) elsewhere)
    return layer


def residual_block(x, filters, resample, norm):
    """ResidualBlock: [N1 -> ReLU -> Conv1 -> N2 -> ReLU -> Conv2] + shortcut; `up` upsamples before Conv1 and the
    1x1 shortcut conv, `down` mean-pools after Conv2 and the shortcut conv, None keeps an identity shortcut."""
    if resample is None and x.shape[-1] == filters:
        shortcut = x
    elif resample == "up":
        shortcut = conv3(filters, he=False, size=1)(upsample(x))
    elif resample == "down":
        shortcut = mean_pool(conv3(filters, he=False, size=1)(x))
    else:
        shortcut = conv3(filters, he=False, size=1)(x)

    def normalise(y):
        layer = resnet_norm(norm)
        return y if layer is None else layer(y)
    y = keras.layers.ReLU()(normalise(x))
    if resample == "up":
        y = conv3(filters)(upsample(y))
    else:  # down: Conv1 keeps the input's channels, Conv2 changes them
        y = conv3(filters if resample is None else x.shape[-1])(y)
    y = keras.layers.ReLU()(normalise(y))
    y = conv3(filters)(y)
    if resample == "down":
        y = mean_pool(y)
    return keras.layers.Add()([shortcut, y])


def resnet_generator(channels=3, z_dim=128, width=128):
    z = keras.Input((z_dim,), name="z")
    # Linear to 4*4*width; tflib reshapes to NCHW [B, width, 4, 4], here NHWC: the same layer, its outputs permuted.
    x = keras.layers.Dense(4 * 4 * width, kernel_initializer=tflib_init(he=False))(z)
    x = keras.layers.Reshape((4, 4, width))(x)
    for _ in range(3):  # [B, 4, 4, w] -> 8 -> 16 -> [B, 32, 32, w]
        x = residual_block(x, width, "up", "batch")
    x = keras.layers.ReLU()(resnet_norm("batch")(x))
    x = conv3(channels, he=False)(x)
    x = keras.layers.Activation("tanh", dtype="float32")(x)
    return keras.Model(z, x, name="generator")


def resnet_critic(channels=3, width=128, norm="none"):
    x_in = keras.Input((32, 32, channels), name="image")
    # OptimizedResBlockDisc1: Conv -> ReLU -> Conv -> mean pool, shortcut mean pool -> 1x1 conv; no normalisation.
    shortcut = conv3(width, he=False, size=1)(mean_pool(x_in))
    y = conv3(width)(x_in)
    y = mean_pool(conv3(width)(keras.layers.ReLU()(y)))
    x = keras.layers.Add()([shortcut, y])  # [B, 16, 16, w]
    x = residual_block(x, width, "down", norm)  # [B, 8, 8, w]
    x = residual_block(x, width, None, norm)
    x = residual_block(x, width, None, norm)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))  # [B, w]
    x = keras.layers.Dense(1, kernel_initializer=tflib_init(he=False), dtype="float32")(x)
    return keras.Model(x_in, x, name="critic")


def count_params(model):
    return int(sum(math.prod(v.shape) for v in model.trainable_variables))


@keras.saving.register_keras_serializable(package="gan")
class RMSprop(keras.optimizers.RMSprop):
    """torch.optim.RMSprop, the WGAN authors' optimizer, as a Keras 3 optimizer (torch's defaults; rho is its alpha).

    Keras' RMSprop divides by sqrt(v + eps), PyTorch's by sqrt(v) + eps: with critic weights clipped to +-0.01 the
    gradients are tiny and eps dominates Keras' denominator (a first step on a 1e-5 gradient moves a weight ~100x
    less). Only update_step differs from keras.optimizers.RMSprop, so schedules, clipnorm, tf.distribute's
    gradient all-reduce and LossScaleOptimizer work as there, and the slot variables ("velocity", ...) keep their
    names and meaning: a checkpoint of either class restores into the other. Momentum is torch's (lr applied
    outside the buffer, which Keras' includes); weight_decay stays Keras' decoupled one, not torch's L2 term.
    """

    def __init__(self, learning_rate=0.01, rho=0.99, momentum=0.0, epsilon=1e-8, centered=False, **kwargs):
        super().__init__(learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        # torch.optim.RMSprop's step term for term, in float32 as torch computes it: v <- rho v + (1 - rho) g^2,
        # w <- w - lr g / (sqrt(v) + eps) (centered: v - a^2 under the sqrt, a the mean gradient). It equals torch's
        # to float32 rounding (1e-5 relative in tests/test_optim.py) at any gradient size; Keras' own moves a weight
        # 100x less on a 1e-5 gradient, 1.4x less on 1e-3.
        lr = keras.ops.cast(learning_rate, variable.dtype)
        g = keras.ops.cast(gradient, variable.dtype)
        i = self._get_variable_index(variable)
        v = self._velocities[i]
        self.assign(v, keras.ops.add(keras.ops.multiply(self.rho, v),
                                     keras.ops.multiply(1 - self.rho, keras.ops.square(g))))
        second_moment = v
        if self.centered:
            a = self._average_gradients[i]
            self.assign(a, keras.ops.add(keras.ops.multiply(self.rho, a), keras.ops.multiply(1 - self.rho, g)))
            second_moment = keras.ops.subtract(v, keras.ops.square(a))
        step = keras.ops.divide(g, keras.ops.add(keras.ops.sqrt(second_moment), self.epsilon))
        if self.momentum > 0:
            buf = self._momentums[i]
            self.assign(buf, keras.ops.add(keras.ops.multiply(self.momentum, buf), step))
            step = buf
        self.assign_sub(variable, keras.ops.multiply(lr, step))

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
    if ups == 0 or size < 3:
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
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="beta")

    def call(self, x):
        mean, var = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + self.epsilon) * self.gamma + self.beta

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def batch_norm():
    # Keras' default momentum 0.99 averages over ~100 steps; PyTorch's DCGAN uses 0.1 in its convention (= 0.9 here).
    # 0.9 follows the reference code, so that moving statistics track the generator closely when sampling.
    # synchronized: on several devices (built inside a multi-device strategy's scope) the batch statistics are
    # those of the global batch, as on one device, and every device keeps the same moving statistics. Only then:
    # on one device it would cost 13% of DCGAN's step time on a CPU for nothing.
    several = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return keras.layers.BatchNormalization(
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


def make_generator(image_size=32, channels=1, z_dim=100, width=64):
    """z [B, z_dim] -> images [B, image_size, image_size, channels] in [-1, 1] (float32 output)."""
    base, ups = base_size(image_size)
    filters = width * 2 ** (ups - 1)
    z = keras.Input((z_dim,), name="z")
    # Project and reshape: z -> [B, base, base, filters] (the paper's first "fractionally-strided" layer).
    x = keras.layers.Dense(base * base * filters, use_bias=False, kernel_initializer=conv_init())(z)
    x = keras.layers.Reshape((base, base, filters))(x)
    x = keras.layers.ReLU()(batch_norm()(x))
    for _ in range(ups - 1):
        filters //= 2
        x = keras.layers.Conv2DTranspose(filters, 4, 2, padding="same", use_bias=False,
                                         kernel_initializer=conv_init())(x)
        x = keras.layers.ReLU()(batch_norm()(x))
    # Output layer: no BatchNorm (the paper: it caused sample oscillation), tanh to match data in [-1, 1].
    x = keras.layers.Conv2DTranspose(channels, 4, 2, padding="same", kernel_initializer=conv_init())(x)
    x = keras.layers.Activation("tanh", dtype="float32")(x)
    return keras.Model(z, x, name="generator")


def make_critic(image_size=32, channels=1, width=64, norm="batch"):
    """images [B, H, W, C] -> one unbounded score per image [B, 1] (a logit for DCGAN, a critic value for WGANs)."""
    base, ups = base_size(image_size)
    norm_layer(norm)  # validates the name before building anything
    x_in = keras.Input((image_size, image_size, channels), name="image")
    # First layer: no normalisation (the paper: BatchNorm on the input layer caused instability).
    x = keras.layers.Conv2D(width, 4, 2, padding="same", kernel_initializer=conv_init())(x_in)
    x = keras.layers.LeakyReLU(0.2)(x)
    filters = width
    for _ in range(ups - 1):
        filters *= 2
        x = keras.layers.Conv2D(filters, 4, 2, padding="same", use_bias=(norm == "none"),
                                kernel_initializer=conv_init())(x)
        layer = norm_layer(norm)
        if layer is not None:
            x = layer(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    # [B, base, base, filters] -> [B, 1]: a dense layer over the last feature map, equivalent to the paper's
    # final base x base convolution.
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(1, kernel_initializer=conv_init(), dtype="float32")(x)
    return keras.Model(x_in, x, name="critic")


def count_params(model):
    return int(sum(math.prod(v.shape) for v in model.trainable_variables))

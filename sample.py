"""Sample from a run of dcgan.py, wgan.py or wgan_gp.py: an image grid, N single images, or latent walks.

The generator is rebuilt from the run's config.json (no architecture flags) and restored from its newest checkpoint,
or from --step / --best. It always runs in inference mode, so BatchNorm uses its moving statistics, and the same
--seed gives the same picture.

    python sample.py runs/dcgan-fashion_mnist-20261127-120000          # 8x8 grid -> RUN/samples/sample_step<N>.png
    python sample.py RUN --step 5000 --rows 4 --cols 16 --seed 1 --out grid.png
    python sample.py RUN --num 10000 --format npz --out fake.npz        # uint8 (N, H, W, C) under 'images', for FID
    python sample.py RUN --num 1000 --out fake_png                      # a folder 000000.png, 000001.png, ...
    python sample.py RUN --interpolate 8                                # 8 slerp walks of 10 images, one per row
    python sample.py RUN --interpolate 4 --interp lerp --interp_steps 16 --gif   # the walks as an animated GIF
    python sample.py RUN --rows 4 --cols 8 --scale 3 --out grid.png     # every pixel a 3x3 block, for a README

--scale N enlarges every written picture (grids, single PNGs, GIF frames) N times by repeating pixels, so 32-pixel
tiles can be shown large without resampling blur; the .npz keeps the generator's own size, for metric tools.
"""
import argparse
import contextlib
import math
import os

import numpy as np
import tensorflow as tf
from PIL import Image

import common
import data
import files


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("run_dir", help="a run directory made by dcgan.py, wgan.py or wgan_gp.py")
    add("--step", type=int, default=None, help="restore the checkpoint of this generator step rather than the newest")
    add("--best", action="store_true", help="restore from ckpt_best/, the run's best checkpoint by its metric")
    add("--seed", type=int, default=0, help="seeds the noise z ~ N(0, I); the same seed gives the same picture")
    add("--rows", type=int, default=8, help="rows of the image grid")
    add("--cols", type=int, default=8, help="columns of the image grid")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--num", type=int, default=None, help="write N single images instead of a grid")
    mode.add_argument("--interpolate", type=int, default=None, metavar="K",
                      help="write K rows of images along paths between random pairs of z")
    add("--format", choices=("png", "npz"), default=None,
        help="with --num: a folder of PNG files, or one .npz holding uint8 (N, H, W, C) under 'images'; "
             "if not given, npz when --out ends in .npz")
    add("--interp", choices=("slerp", "lerp"), default="slerp",
        help="path between the pairs: spherical (suits Gaussian z) or straight")
    add("--interp_steps", type=int, default=10, help="images along each path, both endpoints included")
    add("--gif", action="store_true", help="with --interpolate: write the walk as an animated GIF instead of a PNG")
    add("--scale", type=int, default=1, metavar="N",
        help="enlarge every written image N times, nearest neighbour (each pixel an NxN block); "
             "not the .npz of --format npz, which stays at the generator's size for metric tools")
    add("--batch_size", type=int, default=500, help="images per generator call")
    add("--out", default=None,
        help="output path; if not given, RUN_DIR/samples/ sample_step<N>.png, interp_step<N>.png or .gif, "
             "images_step<N>/ or images_step<N>.npz")
    args = parser.parse_args(argv)
    for name in ("rows", "cols", "num", "interpolate", "scale", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.interp_steps < 2:
        parser.error("--interp_steps must be at least 2 (the two endpoints)")
    if args.gif and not args.interpolate:
        parser.error("--gif needs --interpolate K")
    if args.format and not args.num:
        parser.error("--format needs --num N")
    return args


# ------------------------------------------------------------------------------------------------ latent walks
def lerp(a, b, t):
    return (1.0 - t) * a + t * b


def slerp(a, b, t, eps=1e-6):
    """Spherical interpolation from a (t=0) to b (t=1) along the great circle, over the last axis (Shoemake 1985).

    Gaussian z in many dimensions lies near a sphere of radius sqrt(z_dim): a straight path cuts through its
    improbable inside (the midpoint has norm ~ sqrt(z_dim / 2)), the great circle stays near it (White 2016,
    "Sampling Generative Networks"). Falls back to lerp where a and b are (nearly) parallel and sin(omega) ~ 0.
    """
    a, b, t = (np.asarray(x, np.float64) for x in (a, b, t))
    cos = np.sum(a * b, -1, keepdims=True) / (np.linalg.norm(a, axis=-1, keepdims=True) *
                                              np.linalg.norm(b, axis=-1, keepdims=True))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    sin = np.sin(omega)
    parallel = sin < eps
    sin = np.where(parallel, 1.0, sin)
    # Coefficients first, so that t=0 and t=1 give a and b exactly (sin(omega) / sin(omega) == 1).
    return np.where(parallel, lerp(a, b, t), np.sin((1.0 - t) * omega) / sin * a + np.sin(t * omega) / sin * b)


def latent_walks(pairs, steps, z_dim, seed, interp="slerp"):
    """z [pairs, steps, z_dim]: `steps` evenly spaced points from a to b for `pairs` random pairs a, b ~ N(0, I)."""
    a, b = tf.random.stateless_normal([2, pairs, 1, z_dim], seed=[seed, 15485863]).numpy()
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    return (slerp if interp == "slerp" else lerp)(a, b, t).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ output
def enlarge(images, scale):
    """Nearest-neighbour enlargement of (..., H, W, C) images: every pixel becomes a scale x scale block."""
    if scale == 1:
        return images
    return np.repeat(np.repeat(images, scale, axis=-3), scale, axis=-2)


@contextlib.contextmanager
def atomic_output(path, folder=False):
    """files.atomic_path (a file, or a new folder) with an OSError as one sentence: a crash, a full disk or Ctrl-C
    never leaves a partial output."""
    try:
        with files.atomic_path(os.path.normpath(path), folder=folder) as tmp:
            yield tmp
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        raise common.RunError(f"cannot write {path} ({e.strerror or e}{where}).") from None


def write_png(image, path):
    with atomic_output(path) as tmp:
        data.save_image(image, tmp)


def to_pil(image):
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def write_gif(frames, path, ms_per_frame=100):
    """An animated GIF that plays the frames forth and back, looping forever."""
    frames = [to_pil(f) for f in frames]
    frames += frames[-2:0:-1]
    with atomic_output(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)


def write_images(images, path, fmt, scale=1):
    """N single images: a folder of PNG files (enlarged `scale` times), or one .npz holding the uint8 array under
    'images' (never enlarged: metric tools want the generator's own pixels)."""
    if fmt == "npz":
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=images)
        return
    with atomic_output(path, folder=True) as tmp:
        for i, image in enumerate(images):
            # Plain PIL, not data.save_image: the folder appears whole, so one file's own fsync + rename (5 ms)
            # would only make 10,000 images three times slower.
            to_pil(enlarge(image, scale)).save(os.path.join(tmp, f"{i:06d}.png"), format="PNG")


# -------------------------------------------------------------------------------------------------------- main
def main(argv=None):
    """Returns the path written."""
    args = parse_args(argv)
    generator, config, ckpt = common.load_generator(args.run_dir, args.step, args.best)
    step, z_dim = int(ckpt.rsplit("-", 1)[1]), config["z_dim"]
    samples = os.path.join(args.run_dir, "samples")

    if args.num:
        fmt = args.format or ("npz" if (args.out or "").endswith(".npz") else "png")
        out = args.out or os.path.join(samples, f"images_step{step}" + (".npz" if fmt == "npz" else ""))
        if fmt == "png" and os.path.isdir(out) and os.listdir(out):
            raise common.RunError(f"{out} already exists and is not empty; remove it or choose another --out.")
        write_images(common.generate_images(generator, args.num, z_dim, args.seed, args.batch_size), out, fmt,
                     args.scale)
        what = f"{args.num} images"
    elif args.interpolate:
        z = latent_walks(args.interpolate, args.interp_steps, z_dim, args.seed, args.interp)
        images = common.generate(generator, z.reshape(-1, z_dim), args.batch_size)
        images = images.reshape(*z.shape[:2], *images.shape[1:])  # [pairs, steps, H, W, C]
        out = args.out or os.path.join(samples, f"interp_step{step}.{'gif' if args.gif else 'png'}")
        if args.gif:  # frame t shows point t of every path, in a near-square grid
            cols = math.ceil(math.sqrt(args.interpolate))
            rows = math.ceil(args.interpolate / cols)
            write_gif([enlarge(data.image_grid(images[:, t], rows, cols), args.scale)
                       for t in range(args.interp_steps)], out)
        else:
            write_png(enlarge(data.image_grid(images.reshape(-1, *images.shape[2:]), *z.shape[:2]), args.scale), out)
        what = f"{args.interpolate} {args.interp} paths of {args.interp_steps} images"
    else:
        images = common.generate_images(generator, args.rows * args.cols, z_dim, args.seed, args.batch_size)
        out = args.out or os.path.join(samples, f"sample_step{step}.png")
        write_png(enlarge(data.image_grid(images, args.rows, args.cols), args.scale), out)
        what = f"a {args.rows}x{args.cols} grid"
    if args.scale > 1 and not (args.num and fmt == "npz"):
        what += f" at {args.scale}x"
    print(f"wrote {what} to {out} (checkpoint {ckpt}, seed {args.seed})")
    return out


if __name__ == "__main__":
    common.cli(main)

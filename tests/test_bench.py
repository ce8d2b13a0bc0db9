"""benchmarks/bench_train.py: the FLOP counter on hand-counted layers, the CPU flag parser, one tiny run."""
import os
import subprocess
import sys

import keras
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_train  # noqa: E402
import ops  # noqa: E402


def built(*layers, shape):
    """The layers applied in a chain to an input of `shape` (so that each knows its input and output shapes)."""
    x = x_in = keras.Input(shape)
    for layer in layers:
        x = layer(x)
    return keras.Model(x_in, x)


def test_dense_flops():
    dense = keras.layers.Dense(3)
    built(dense, shape=(4,))
    assert bench_train.layer_flops(dense, batch=2) == 2 * 2 * 4 * 3  # 2 FLOPs per multiply-add


def test_conv_flops():
    # 8x8x3 -> 4x4x5 (stride 2, 'same'): each of the 2*4*4*5 outputs sums 3x3x3 products.
    conv = keras.layers.Conv2D(5, 3, 2, padding="same")
    built(conv, shape=(8, 8, 3))
    assert bench_train.layer_flops(conv, batch=2) == 2 * (2 * 4 * 4 * 5) * (3 * 3 * 3)
    # Transposed 4x4x6 -> 8x8x2: each of the 2*4*4*6 inputs is scattered through the 4x4 kernel into 2 channels.
    up = keras.layers.Conv2DTranspose(2, 4, 2, padding="same")
    built(up, shape=(4, 4, 6))
    assert bench_train.layer_flops(up, batch=2) == 2 * (2 * 4 * 4 * 6) * (4 * 4 * 2)
    norm, act = keras.layers.BatchNormalization(), keras.layers.LeakyReLU(0.2)
    built(norm, act, shape=(4, 4, 6))
    assert bench_train.layer_flops(norm, 2) == bench_train.layer_flops(act, 2) == 0  # not counted


def test_step_flops_by_hand():
    # Generator z(2) -> 3 -> 4, critic 4 -> 5 -> 1; batch 1. Multiply-adds per layer: G 6, 12; D 20, 5.
    generator = built(keras.layers.Dense(3), keras.layers.ReLU(), keras.layers.Dense(4), shape=(2,))
    critic = built(keras.layers.Dense(5), keras.layers.LeakyReLU(0.2), keras.layers.Dense(1), shape=(4,))
    assert bench_train.network_flops(critic, 1) == (2 * 25, 2 * 20, 2 * 5)
    critic_update = (18  # G forward on fresh z
                     + 2 * 25  # D forward on real and fake
                     + 2 * 25  # D weight gradients, both batches
                     + 2 * 5)  # D input gradients but the first layer's, both batches
    generator_update = (18 + 25  # G and D forward
                        + 25  # D input gradients through every layer, down to the fakes
                        + 18 + 12)  # G weight gradients, and input gradients but the first layer's
    penalty = (25  # D forward at x_hat
               + 25  # dD/dx_hat
               + (25 + 20)  # back through dD/dx_hat: weight gradients 25, input gradients 20 (not the last layer's)
               + (20 + 0))  # back through D(x_hat): the first layer's weight gradient (its input x_hat: none; the
    #                         last layer's output is unused by the penalty)
    assert bench_train.step_flops("dcgan", generator, critic, 1, 1) == 2 * (critic_update + generator_update)
    assert bench_train.step_flops("wgan", generator, critic, 1, 5) == 2 * (5 * critic_update + generator_update)
    assert bench_train.step_flops("wgan_gp", generator, critic, 1, 5) == \
        2 * (5 * (critic_update + penalty) + generator_update)
    assert bench_train.step_flops("wgan", generator, critic, 3, 5) == 3 * bench_train.step_flops(
        "wgan", generator, critic, 1, 5)


def test_dcgan_step_flops_match_the_reference():
    # REFERENCE.md: the 32x32 DCGAN step (256-128-64 generator, 64-128-256 critic, 4x4 kernels) is ~0.4 GFLOP/image.
    generator, critic = ops.make_generator(32, 1, 100, 64), ops.make_critic(32, 1, 64, norm="batch")
    assert 0.38e9 < bench_train.step_flops("dcgan", generator, critic, 1, 1) < 0.44e9
    conv = bench_train.largest_conv(critic)
    assert bench_train.conv_description(conv, 64) == "16x16x64 -> 8x8x128, 4x4/2, batch 64"


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512_bf16 avx512vl

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512_bf16 avx512vl
"""


def test_cpuinfo_parser():
    model, flags = bench_train.parse_cpuinfo(CPUINFO)
    assert model == "AMD EPYC 9R14 96-Core Processor"
    assert {"avx2", "fma", "avx512f", "avx512_bf16"} <= flags and "amx_tile" not in flags
    assert bench_train.cpu_feature_line(flags) == \
        "AVX-512 yes, AVX512_BF16 yes, AMX no, AVX2 yes, FMA yes, AVX512_FP16 no"
    old = bench_train.cpu_feature_line(bench_train.parse_cpuinfo("model name : Old\nflags : sse2 avx avx2 fma\n")[1])
    assert old == "AVX-512 no, AVX512_BF16 no, AMX no, AVX2 yes, FMA yes, AVX512_FP16 no"
    assert bench_train.parse_cpuinfo("") == ("unknown", set())


def test_machine_header_says_when_bf16_is_missing(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("model name : Old CPU\nflags : sse2 avx avx2 fma\n")
    text = "\n".join(bench_train.machine_header(str(path)))
    assert "CPU: Old CPU" in text and "AVX2 yes" in text
    assert "no bf16 instructions" in text


@pytest.mark.parametrize("variant,precision", [("wgan", "bf16"),  # the warm-up row too; the others are slow
                                               pytest.param("dcgan", "fp16", marks=pytest.mark.slow),
                                               pytest.param("wgan_gp", "fp32", marks=pytest.mark.slow)])
def test_bench_runs_and_prints_a_table(tiny_fashion, variant, precision):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"), "--variants", variant,
         "--precisions", precision, "--xla", "off", "--steps", "2", "--warmup", "1", "--matmul_size", "128",
         "--ceiling_seconds", "0.05", "--pipeline_seconds", "0.1", "--data_dir", tiny_fashion, "--image_size", "16",
         "--batch_size", "8", "--width", "8", "--z_dim", "8"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "- CPU: " in out.stdout and "TensorFlow " in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith(f"| {variant} |")]
    # WGAN's warm-up (100 critic updates per generator step) gets its own row.
    assert len(rows) == (2 if variant == "wgan" else 1), out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == precision and cells[2] == "off" and cells[3] == "8"
        values = [float(c) for c in cells[5:]]  # steps timed ... % of matmul ceiling, input pipeline images/s
        assert len(values) == 9 and all(v > 0 for v in values), row
    ceilings = [line for line in out.stdout.splitlines() if line.startswith(f"| {precision} |")]
    assert len(ceilings) == 1, out.stdout
    cells = [c.strip() for c in ceilings[0].strip("|").split("|")]  # precision, dtype, conv, GFLOP/s, matmul, GFLOP/s
    assert float(cells[3]) > 0 and float(cells[5]) > 0, ceilings[0]
    if variant == "wgan":
        assert "100 (warm-up)" in rows[1]


def test_fixed_cost_table_has_ours_and_the_plain_step(capsys):
    """The fixed-cost table in-process: ours at 1 and K steps per call beside the plain Keras step (at 1 per call and
    K in one call), with op counts (on Debian's Fashion-MNIST, which .ci/run installs)."""
    bench_train.main(["--fixed_cost", "--variants", "dcgan", "--xla", "off", "--steps", "4", "--per_call", "2",
                      "--rounds", "1"])
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| dcgan |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "off" and "--width 2 --batch_size 2 --z_dim 2" in out
    ours_1, ours_k, ops, loop_1, loop_k, plain, plain_k, plain_ops, ratio = (float(c) for c in cells[2:])
    assert min(ours_1, ours_k, loop_1, loop_k, plain, plain_k) > 0 and ops > 500 and plain_ops > 500
    assert abs(ratio - ours_1 / plain) < 0.01 * ratio + 0.01


@pytest.mark.parametrize("flags, ok", [(["--width=64", "--batch_size", "64", "--z_dim", "100"], True),
                                       (["--width", "64", "--batch_size=64"], True),
                                       (["--width=64", "--lr", "1e-4"], False),
                                       (["--lr=1e-4", "--width", "64"], False)])
def test_fixed_cost_takes_only_the_network_flags_in_either_form(flags, ok):
    if ok:
        known, passed = bench_train.parse_args(["--fixed_cost", *flags])
        assert known.fixed_cost and passed == flags
    else:
        with pytest.raises(SystemExit):
            bench_train.parse_args(["--fixed_cost", *flags])


def test_op_count_includes_the_functions_a_graph_calls():
    import tensorflow as tf

    inner = tf.function(lambda x: x * 2.0 + 1.0)
    outer = tf.function(lambda x: inner(x) - 3.0)
    x = tf.constant(1.0)
    assert bench_train.op_count(outer, x) > bench_train.op_count(inner, x) > 2


def test_make_folder_once(tmp_path):
    import numpy as np
    from PIL import Image

    import data
    folder = str(tmp_path / "folder")
    assert bench_train.make_folder(folder, 12) == folder
    files = sorted(p for p in (tmp_path / "folder").rglob("*.jpg"))
    assert len(files) == 12 and Image.open(files[0]).size == (96, 112) and Image.open(files[0]).mode == "RGB"
    mtimes = [f.stat().st_mtime_ns for f in files]
    bench_train.make_folder(folder, 12)  # complete: kept as it is
    assert [f.stat().st_mtime_ns for f in files] == mtimes and os.listdir(tmp_path) == ["folder"]
    images = data.load_images("folder", folder, image_size=16, channels=3)
    assert images.shape == (12, 16, 16, 3) and len({image.tobytes() for image in images}) == 12
    assert np.ptp(images) > 100  # varied colours, not a blank folder


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], check=True)


def test_profile_op_times_subtract_nested_events():
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    import profile_step
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    names = {1: "loop:While", 2: "conv:_MklNativeConv2D", 3: "ExecutorState::Process", 4: "mul:Mul"}
    for key, name in names.items():
        plane.event_metadata[key].name = name
    line = plane.lines.add(name="tf_Compute/7")
    # While [0, 100) holds a Conv2D [10, 60) and an executor wrapper [60, 90) holding a Mul [65, 85).
    for key, start, end in [(1, 0, 100), (2, 10, 60), (3, 60, 90), (4, 65, 85)]:
        line.events.add(metadata_id=key, offset_ps=start * 10 ** 12, duration_ps=(end - start) * 10 ** 12)
    plane.lines.add(name="tf_data_private_threadpool").events.add(metadata_id=4, offset_ps=0, duration_ps=10 ** 15)
    assert profile_step.op_self_times(space) == {"While": 20, "_MklNativeConv2D": 50, "Mul": 20}


def test_profile_parts_from_node_names():
    import profile_step
    part = profile_step.part_of
    assert part("while/body/_1/gradient_tape/while/critic_1/conv2d_2_1/Conv2DBackpropFilter:Conv2DBackpropFilter") \
        == "networks, backward"
    assert part("while/body/_1/while/generator_3/batch_normalization_1/FusedBatchNormV3:FusedBatchNormV3") \
        == "networks, forward"
    assert part("while/body/_1/while/adam/Sub_2/ReadVariableOp:ReadVariableOp") == "optimizers"
    assert part("while/body/_1/while/progress/SelectV2:SelectV2") == "Progress' bookkeeping"
    assert part("while/body/_1/while/StatefulUniform:RngReadAndSkip") == "random generator"
    assert part("while/body/_1/while/sub_3:Sub") == profile_step.OTHER_PART


@pytest.mark.slow  # about 9 s; profile_step's op accounting is tested above without a profile
def test_profile_step_runs_and_prints_the_kernel_bound(tiny_fashion):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"), "dcgan", "--serial", "--layers",
         "--batchnorm", "--layer_seconds", "0.03", "--steps", "2", "--warmup", "1", "--data_dir", tiny_fashion,
         "--image_size", "16", "--batch_size", "8", "--width", "8", "--z_dim", "8"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| _Mkl") or line.startswith("| Conv2D")]
    assert rows and all(float(row.split("|")[2]) > 0 for row in rows), out.stdout
    assert "convolution and matmul kernels alone:" in out.stdout and "- CPU: " in out.stdout
    # --layers: the generator's two transposed convolutions and the critic's two convolutions at 16x16.
    by_layer = [line for line in out.stdout.splitlines() if line.startswith(("| generator |", "| critic |"))]
    layers = [line for line in by_layer if "->" in line]
    assert [line.split("|")[2].strip() for line in layers] == [
        "4x4x16 -> 8x8x8, 4x4/2", "8x8x8 -> 16x16x1, 4x4/2", "16x16x1 -> 8x8x8, 4x4/2", "8x8x8 -> 4x4x16, 4x4/2"]
    # --batchnorm: every BatchNorm of both networks, each timed through both computations.
    norms = [line.split("|")[1:6] for line in by_layer if "->" not in line]
    assert [(network.strip(), shape.strip()) for network, shape, *_ in norms] == [
        ("generator", "1x1x256"), ("generator", "8x8x8"), ("critic", "4x4x16")], out.stdout
    assert all(float(fused) > 0 and float(composed) > 0 for _, _, fused, composed, _ in norms)


def test_resnet_flops_count_every_conv_shortcut_pool_and_sum_by_hand():
    w, c = 16, 3
    generator = ops.make_generator(32, c, 128, w, arch="resnet")
    critic = ops.make_critic(32, c, w, norm="none", arch="resnet")

    def conv(size, k, c_in, c_out):
        return 2 * size * size * k * k * c_in * c_out

    def pool(size, ch):  # size x size -> size/2: every input added, every output divided
        return size * size * ch + (size // 2) ** 2 * ch
    up = sum(conv(2 * s, 1, w, w) + 2 * conv(2 * s, 3, w, w) + (2 * s) ** 2 * w for s in (4, 8, 16))
    g = 2 * 128 * 16 * w + up + conv(32, 3, w, c)
    first_d = pool(32, c) + conv(16, 1, c, w) + conv(32, 3, c, w)  # the optimized block's image-reading layers
    d = (first_d + conv(32, 3, w, w) + pool(32, w) + 16 * 16 * w  # block 1: ... conv2, mean pool, + shortcut
         + conv(16, 1, w, w) + pool(16, w) + 2 * conv(16, 3, w, w) + pool(16, w) + 8 * 8 * w  # block 2, down
         + 2 * (2 * conv(8, 3, w, w) + 8 * 8 * w)  # blocks 3 and 4, identity shortcuts
         + 8 * 8 * w + w + 2 * w)  # global mean pool, linear
    assert bench_train.network_flops(generator, 1) == (g, 2 * 128 * 16 * w, conv(32, 3, w, c))
    assert bench_train.network_flops(critic, 1) == (d, first_d, 2 * w)
    assert bench_train.network_flops(critic, 4)[0] == 4 * d
    # --gen_batch_multiple 2 (the recipe's): the generator update, alone what n_critic 0 counts, is counted twice.
    step = [bench_train.step_flops("wgan_gp", generator, critic, 64, n, m) for n, m in ((5, 1), (5, 2), (0, 1))]
    assert step[1] == step[0] + step[2] and step[2] > 0

"""experiments/dcgan_gap.py: the plain TF2/Keras reference matches its description, each switch is one change, the
harness's arms are the scripts step for step, and docs/dcgan_gap.csv gives the page's answer."""
import csv
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
import common  # noqa: E402
import data  # noqa: E402
import dcgan  # noqa: E402
import dcgan_gap as ab  # noqa: E402
import devices  # noqa: E402
import ops  # noqa: E402
import training  # noqa: E402


def shapes(model):
    return sorted(tuple(v.shape) for v in model.weights)


def bn_layers(model):
    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def test_each_switch_changes_exactly_one_setting():
    assert ab.config("ours") == ab.OURS and ab.config("plain") == ab.PLAIN
    assert all(ab.OURS[k] != ab.PLAIN[k] for k in ab.SWITCHES)
    for name in ab.SWITCHES:
        for base, other in (("ours", ab.PLAIN), ("plain", ab.OURS)):
            cfg, start = ab.config(f"{base}+{name}"), ab.config(base)
            assert [k for k in cfg if cfg[k] != start[k]] == [name] and cfg[name] == other[name]
    with pytest.raises(common.RunError):
        ab.config("ours+nothing")


def test_ours_networks_are_ops_networks_and_plain_differs_only_in_the_first_bn():
    ours_g, ours_d = ab.plain_generator(ab.OURS), ab.plain_critic(ab.OURS)
    assert shapes(ours_g) == shapes(ops.make_generator(32, 1, 100, 64))
    assert shapes(ours_d) == shapes(ops.make_critic(32, 1, 64, norm="batch"))
    assert ours_g.output_shape == (None, 32, 32, 1) and ours_d.output_shape == (None, 1)
    # dcgan.py's default (--first_bn feature) is ours+g_bn0's generator, layer for layer
    feature_g, script_g = ab.plain_generator(ab.config("ours+g_bn0")), ops.make_generator(32, 1, 100, 64, "dcgan",
                                                                                           "feature")
    assert [type(l) for l in feature_g.layers] == [type(l) for l in script_g.layers]
    assert shapes(feature_g) == shapes(script_g)
    plain_g, plain_d = ab.plain_generator(ab.PLAIN), ab.plain_critic(ab.PLAIN)
    assert shapes(plain_d) == shapes(ours_d)
    # plain's first BN normalises the 4*4*256 dense outputs one by one (Dense -> BN -> ReLU -> convT, as users write it)
    assert bn_layers(plain_g)[0].gamma.shape == (4096,) and bn_layers(ours_g)[0].gamma.shape == (256,)
    for model, cfg in ((plain_g, ab.PLAIN), (plain_d, ab.PLAIN), (ours_g, ab.OURS), (ours_d, ab.OURS)):
        for layer in bn_layers(model):
            assert (layer.epsilon, layer.momentum) == (cfg["bn_eps"], cfg["bn_momentum"])
            assert isinstance(layer, ops.BatchNormalization) == (cfg["bn_op"] == "fused")


def test_plain_softplus_losses_equal_dcgan_losses():
    d_real, d_fake = tf.constant([[2.0], [-1.0], [0.5]]), tf.constant([[-3.0], [0.2], [4.0]])
    d_loss, g_loss = ab.plain_losses(d_real, d_fake)
    np.testing.assert_allclose(d_loss, tf.reduce_mean(dcgan.critic_loss(d_real, d_fake)), rtol=1e-6)
    np.testing.assert_allclose(g_loss, tf.reduce_mean(dcgan.generator_loss(d_fake)), rtol=1e-6)


def test_padding_keeps_the_pixels_and_cropping_it_gives_data_py_geometry(tiny_fashion, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tiny_fashion)
    padded, raw = ab.real_images("pad"), data.load_images("fashion_mnist", image_size=28)
    assert padded.shape[1:] == (32, 32, 1)
    assert (padded[:, :2] == 0).all() and (padded[:, :, -2:] == 0).all()  # uint8 0 -> -1 in training
    np.testing.assert_array_equal(padded[:, 2:-2, 2:-2], raw)
    np.testing.assert_array_equal(ab.to_resized(padded, "pad"), ab.real_images("resize"))
    assert ab.to_padded(padded, "pad") is padded and ab.to_padded(padded, "resize").shape == padded.shape


@pytest.mark.parametrize("first_bn, name", [("feature", "ours+g_bn0"), ("channel", "ours")])
def test_ours_is_dcgan_py_step_for_step(first_bn, name):
    """The harness's "ours" runs dcgan.py's own train step: from the same weights, batches and z seed, three steps of
    dcgan.make_train_step (its strategy, optimizers, loss averaging) and of ours leave the same weights, and a single
    switch more (+bn_eps) does not. So what the harness finds about ours holds for dcgan.py: ours+g_bn0 is dcgan.py
    with its default --first_bn feature, ours is dcgan.py --first_bn channel."""
    flags = ["--batch_size", str(ab.BATCH), "--seed", "3"] + ([] if first_bn == "feature" else ["--first_bn", first_bn])
    args = dcgan.parse_args(flags)
    assert args.first_bn == first_bn and ab.script_as_config(dict(ab.DCGAN_PY, config="dcgan.py")) == "ours+g_bn0"
    strategy = devices.make_strategy(args)
    keras.utils.set_random_seed(3)
    with strategy.scope():
        g = ops.make_generator(32, 1, ab.Z_DIM, 64, first_bn=args.first_bn)
        d = ops.make_critic(32, 1, 64, norm="batch")
        g_opt, d_opt = dcgan.make_optimizers(args, g, d)
        rng = tf.random.Generator.from_seed(3)
        progress = training.Progress(generator=g_opt, critic=d_opt)
    start = (g.get_weights(), d.get_weights())
    batches = np.random.default_rng(0).uniform(-1, 1, (3, ab.BATCH, 32, 32, 1)).astype(np.float32)
    script_step = dcgan.make_train_step(args, strategy, g, d, g_opt, d_opt, rng, progress)
    iterator = iter(tf.data.Dataset.from_tensor_slices(batches))
    script_losses = [float(script_step(iterator, tf.constant(1))["critic_loss"]) for _ in batches]

    def harness(name):
        cfg = ab.config(name)
        hg, hd = ab.plain_generator(cfg), ab.plain_critic(cfg)
        hg.set_weights(start[0])  # same layers in the same order (test above), so the same weights
        hd.set_weights(start[1])
        step = ab.make_plain_dcgan_step(cfg, hg, hd, *ab.make_optimizers(cfg, False), tf.random.Generator.from_seed(3))
        return [float(step(tf.constant(b))[0]) for b in batches], hg.get_weights() + hd.get_weights()
    losses, weights = harness(name)
    np.testing.assert_allclose(losses, script_losses, rtol=1e-5)
    for got, want in zip(weights, g.get_weights() + d.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    _, other = harness(name + "+bn_eps")
    assert max(np.abs(a - b).max() for a, b in zip(other, weights)) > 1e-4


def test_bn_momentum_changes_only_the_moving_statistics():
    """plain and plain+bn_momentum train identically (batch statistics in training; the moving ones are only read at
    sampling), so the momentum's effect is on sampling alone."""
    def run(name):
        cfg = ab.config(name)
        keras.utils.set_random_seed(5)
        g, d = ab.plain_generator(cfg), ab.plain_critic(cfg)
        step = ab.make_plain_dcgan_step(cfg, g, d, *ab.make_optimizers(cfg, False), tf.random.Generator.from_seed(5))
        for b in np.random.default_rng(0).uniform(-1, 1, (3, ab.BATCH, 32, 32, 1)).astype(np.float32):
            step(tf.constant(b))
        trainable = g.trainable_weights + d.trainable_weights
        return [v.numpy() for v in trainable], [v.numpy() for v in g.non_trainable_weights]
    trained, moving = run("plain")
    trained_m, moving_m = run("plain+bn_momentum")
    assert all(np.array_equal(a, b) for a, b in zip(trained, trained_m))  # bit for bit
    assert max(np.abs(a - b).max() for a, b in zip(moving, moving_m)) > 1e-3


def test_ours_wgan_gp_is_wgan_gp_py_step_for_step(monkeypatch):
    """The same for WGAN-GP: one step (five critic updates and a generator update) of wgan_gp.make_train_step and of
    ours_wgan_gp from the same weights, batches and z/epsilon seed leave the same weights; with lambda 1 instead of
    10 they do not. Both use Adam(1e-4, 0, 0.9) with epsilon 1e-2 here: with beta_1 = 0 and the real 1e-8, a first
    update moves each weight by +-lr whatever its gradient's size, so the last bit of a near-zero gradient (the two
    programs sum the loss in another order) flips a sign and the comparison would see rounding, not the algorithm."""
    import wgan_gp
    args = wgan_gp.parse_args(["--batch_size", str(ab.BATCH), "--seed", "3"])
    cfg = ab.config("ours_wgan_gp")
    harness_adam = ab.make_optimizers(cfg, True)[0]  # the harness's Adam is the script's, epsilon aside
    assert harness_adam.learning_rate.numpy() == np.float32(args.lr)  # a float32 variable
    assert (args.beta1, args.beta2, args.n_critic, args.gp_weight) == (harness_adam.beta_1, harness_adam.beta_2,
                                                                       ab.N_CRITIC, ab.GP_WEIGHT)

    def adams():
        return ab.make_optimizers(cfg, True, epsilon=1e-2)
    strategy = devices.make_strategy(args)
    keras.utils.set_random_seed(3)
    with strategy.scope():
        g, d = ops.make_generator(32, 1, ab.Z_DIM, 64), ops.make_critic(32, 1, 64, norm=args.norm)
        g_opt, d_opt = adams()
        progress = training.Progress(generator=g_opt, critic=d_opt)
        script_step = wgan_gp.make_train_step(args, strategy, g, d, g_opt, d_opt, tf.random.Generator.from_seed(3),
                                              progress)
    start = g.get_weights() + d.get_weights()
    batches = np.random.default_rng(0).uniform(-1, 1, (ab.N_CRITIC, ab.BATCH, 32, 32, 1)).astype(np.float32)
    script_step(iter(tf.data.Dataset.from_tensor_slices(batches)), tf.constant(1))
    script = g.get_weights() + d.get_weights()

    def harness():
        hg, hd = ab.plain_generator(cfg), ab.plain_critic(cfg, layer_norm=True)
        hg.set_weights(start[:len(hg.weights)])
        hd.set_weights(start[len(hg.weights):])
        step = ab.make_plain_wgan_gp_step(hg, hd, *adams(), tf.random.Generator.from_seed(3))
        step(iter(tf.data.Dataset.from_tensor_slices(batches)))
        return hg.get_weights() + hd.get_weights()
    for got, want in zip(harness(), script):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    monkeypatch.setattr(ab, "GP_WEIGHT", 1.0)
    assert max(np.abs(a - b).max() for a, b in zip(harness(), script)) > 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("reuse, draws", [("reuse", 1), ("redraw", 2)])
def test_z_switch_draws_one_or_two_batches_per_step(reuse, draws):
    cfg = dict(ab.OURS, z=reuse)
    g, d = ab.plain_generator(cfg), ab.plain_critic(cfg)
    rng = tf.random.Generator.from_seed(3)
    step = ab.make_plain_dcgan_step(cfg, g, d, keras.optimizers.Adam(), keras.optimizers.Adam(), rng)
    losses = step(tf.zeros([ab.BATCH, 32, 32, 1]))
    assert all(np.isfinite(float(v)) for v in losses)
    expected = tf.random.Generator.from_seed(3)
    for _ in range(draws):
        expected.normal([ab.BATCH, ab.Z_DIM])
    np.testing.assert_array_equal(rng.state.numpy(), expected.state.numpy())


@pytest.mark.slow
def test_a_tiny_run_yields_scored_rows():
    images = np.random.default_rng(0).integers(0, 256, (128, 32, 32, 1), dtype=np.uint8)
    seen = []

    def scorer(fake, fit):
        seen.append((fake.shape, fake.dtype, fit))
        return 1.0, 2.0, 3.0
    rows = list(ab.train("plain+fit", 0, steps=3, eval_every=2, scorer=scorer, eval_samples=5, images=images))
    assert [r["step"] for r in rows] == [2, 3] and rows[0]["fit"] == "resize" and rows[0]["z"] == "reuse"
    assert seen == [((5, 32, 32, 1), np.uint8, "resize")] * 2 and rows[-1]["fd_resized"] == 2.0


def test_plain_wgan_gp_has_keras_layer_norm_in_the_critic_and_ours_has_the_scripts_networks():
    assert ab.config("plain_wgan_gp") == ab.PLAIN_WGAN_GP and ab.config("ours_wgan_gp") == ab.OURS_WGAN_GP
    for name in ab.WGAN_GP_SWITCHES:  # one setting per switch, as for DCGAN
        for base, other in (("ours_wgan_gp", ab.PLAIN_WGAN_GP), ("plain_wgan_gp", ab.OURS_WGAN_GP)):
            cfg, start = ab.config(f"{base}+{name}"), ab.config(base)
            assert [k for k in cfg if cfg[k] != start[k]] == [name] and cfg[name] == other[name]
    with pytest.raises(common.RunError):
        ab.config("ours_wgan_gp+z")  # both programs draw a fresh z per update: no such switch
    critic = ab.plain_critic(ab.PLAIN_WGAN_GP, layer_norm=True)
    norms = [l for l in critic.layers if isinstance(l, keras.layers.LayerNormalization)]
    assert not bn_layers(critic) and len(norms) == 2
    assert [tuple(l.axis) for l in norms] == [(1, 2, 3)] * 2 and norms[0].gamma.shape == (8, 8, 128)
    ours = ab.plain_critic(ab.OURS_WGAN_GP, layer_norm=True)
    assert sum(isinstance(l, ops.LayerNorm) for l in ours.layers) == 2 and not bn_layers(ours)
    assert shapes(ours) == shapes(ops.make_critic(32, 1, 64, norm="layer"))
    assert shapes(ab.plain_generator(ab.OURS_WGAN_GP)) == shapes(ops.make_generator(32, 1, 100, 64))


@pytest.mark.slow
def test_plain_wgan_gp_step_takes_n_critic_batches_and_fresh_noise_per_update():
    g, d = ab.plain_generator(ab.PLAIN_WGAN_GP), ab.plain_critic(ab.PLAIN_WGAN_GP, layer_norm=True)
    rng = tf.random.Generator.from_seed(3)
    step = ab.make_plain_wgan_gp_step(g, d, keras.optimizers.Adam(), keras.optimizers.Adam(), rng)
    batches = iter(tf.data.Dataset.range(100).map(lambda i: tf.fill([ab.BATCH, 32, 32, 1], tf.cast(i, tf.float32))))
    d_loss, g_loss = step(batches)
    assert np.isfinite(float(d_loss)) and np.isfinite(float(g_loss))
    assert float(next(batches)[0, 0, 0, 0]) == ab.N_CRITIC  # batches 0..4 went to the critic updates
    expected = tf.random.Generator.from_seed(3)
    for _ in range(ab.N_CRITIC):  # one z and one epsilon per critic update, then the generator's z
        expected.normal([ab.BATCH, ab.Z_DIM])
        expected.uniform([ab.BATCH, 1, 1, 1])
    expected.normal([ab.BATCH, ab.Z_DIM])
    np.testing.assert_array_equal(rng.state.numpy(), expected.state.numpy())


@pytest.mark.slow
def test_a_minutes_budget_stops_at_the_clock_and_labels_the_row():
    images = np.random.default_rng(0).integers(0, 256, (128, 32, 32, 1), dtype=np.uint8)
    rows = list(ab.train("ours", 0, steps=50, eval_every=0, scorer=lambda fake, fit: (1.0, 2.0, 3.0),
                         eval_samples=5, images=images, minutes=1e-4))  # 6 ms: the first step passes it
    assert [(r["step"], r["budget"]) for r in rows] == [(1, "0.0001 min")]
    rows = list(ab.train("ours", 0, steps=2, eval_every=0, scorer=lambda fake, fit: (1.0, 2.0, 3.0),
                         eval_samples=5, images=images, minutes=60))  # the step cap comes first: no budget label
    assert [(r["step"], r["budget"]) for r in rows] == [(2, "")]


def test_summary_groups_rows_by_step_and_by_minutes_budget(tmp_path):
    path = tmp_path / "rows.csv"
    rows = [("a", 0, 1000, ""), ("a", 1, 1000, ""), ("a", 0, 2100, "5 min"), ("a", 1, 2200, "5 min"),
            ("b", 0, 1000, "")]
    with open(path, "w") as f:
        f.write("arm,seed,step,fd_own,fd_resized,fit,budget\n")
        for i, (name, seed, step, budget) in enumerate(rows):
            f.write(f"{name},{seed},{step},{i},{10 * (i + 1)},resize,{budget}\n")
    lines = ab.summary(ab.read_rows([str(path)])).splitlines()
    assert lines[0] == "| arm | step 1000 | 5 min |"
    assert lines[2] == "| a | 15.0 ± 7.1 (2) | 35.0 ± 7.1 (2) |" and lines[3] == "| b | 50.0 ± 0.0 (1) |  |"
    steps = ab.summary(ab.read_rows([str(path)]), "step").splitlines()
    assert steps[2] == "| a | 1000.0 ± 0.0 (2) | 2150.0 ± 70.7 (2) |"



def test_compare_pools_arms_and_gives_welch_t_and_a_permutation_p(tmp_path):
    path = tmp_path / "rows.csv"
    rows = [("a", 1000, 10), ("a", 1000, 12), ("a", 1000, 14), ("b", 1000, 20), ("b", 1000, 22), ("c", 1000, 24),
            ("a", 2000, 5), ("b", 2000, 6), ("b", 2000, 7), ("d", 1000, 0)]  # step 2000: one run of a, no row
    with open(path, "w") as f:
        f.write("arm,seed,step,fd_resized,budget\n")
        f.writelines(f"{name},0,{step},{fd},\n" for name, step, fd in rows)
    lines = ab.compare(ab.read_rows([str(path)]), "a", "b,c").splitlines()
    assert len(lines) == 3 and lines[0] == "| budget | a | b,c | difference | Welch t | permutation p |"
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    # a: 12 +- 2, b and c pooled: 22 +- 2; se = sqrt(4/3 + 4/3); of the 20 splits of the six runs into 3 + 3, two
    # (a's three lowest, or its mirror) give |difference| >= 10
    t = -10 / (4 / 3 + 4 / 3) ** 0.5
    assert cells[:5] == ["step 1000", "12.0 ± 2.0 (3)", "22.0 ± 2.0 (3)", "-10.0 ± 1.6", f"{t:+.2f}"]
    assert abs(float(cells[5]) - 2 / 20) < 0.01


def test_effects_with_one_baseline_count_every_run_and_dcgan_py_as_ours(tmp_path):
    truth = dict(zip(ab.SWITCHES, (4.0, -2.0, 0.0, 1.0, 3.0, -1.0, 6.0)))
    path = tmp_path / "rows.csv"

    def score(name):
        return 50.0 + sum(truth[k] / 2 * x for k, x in zip(ab.SWITCHES, ab.levels(name)))
    with open(path, "w") as f:
        f.write("arm,seed,step,fd_resized\n")
        for seed in (100, 101):
            for name in ab.FACTORIAL:
                x = dict(zip(ab.SWITCHES, ab.levels(name)))
                f.write(f"{name},{seed},2000,{score(name) + 0.5 * x['fit'] * x['g_bn0']}\n")
        f.write(f"dcgan.py,7,2000,{score('ours')}\nplain,8,2000,{score('plain')}\n")  # lone seeds, on the model
    blocked = ab.effects(ab.read_rows([str(path)])).splitlines()
    pooled = ab.effects(ab.read_rows([str(path)]), one_baseline=True).splitlines()
    assert blocked[0].startswith("step 2000: 33 runs, 3 seed(s)")  # dcgan.py left out; plain's lone seed 8 kept
    # one intercept: dcgan.py counts as ours, 34 runs, 8 unknowns; the lone runs sit on the model, so the residual
    # is the interaction's alone
    assert pooled[0] == f"step 2000: 34 runs, one baseline, residual sd {np.sqrt(8 / 26):.1f} (26 dof)"
    for k, line in zip(ab.SWITCHES, pooled[4:]):
        assert line.startswith(f"| {k} | {truth[k]:+.1f} | ")


def test_the_factorial_design_is_resolution_iv_and_holds_both_corners():
    levels = np.array([ab.levels(name) for name in ab.FACTORIAL])
    assert levels.shape == (16, 7) and len(set(ab.FACTORIAL)) == 16
    assert (levels.T @ levels == 16 * np.eye(7)).all()  # balanced, every pair of switches orthogonal
    pairs = [levels[:, j] * levels[:, k] for j in range(7) for k in range(j + 1, 7)]
    assert all((levels.T @ pair == 0).all() for pair in pairs)  # no main effect aliased with a 2-switch interaction
    assert ab.config(ab.FACTORIAL[15]) == ab.OURS and ab.config(ab.FACTORIAL[7]) == ab.PLAIN


def test_effects_recovers_each_switch_effect_with_seed_blocks(tmp_path):
    truth = dict(zip(ab.SWITCHES, (4.0, -2.0, 0.0, 1.0, 3.0, -1.0, 6.0)))
    path = tmp_path / "rows.csv"
    with open(path, "w") as f:
        f.write("arm,seed,step,fd_resized\n")
        for seed, offset in ((100, 50.0), (101, 57.0)):  # a second replicate, 7 points worse throughout
            for name in ab.FACTORIAL:
                x = dict(zip(ab.SWITCHES, ab.levels(name)))
                noise = 0.5 * x["fit"] * x["g_bn0"]  # a 2-switch interaction: orthogonal to every main effect
                f.write(f"{name},{seed},2000,{offset + sum(truth[k] / 2 * x[k] for k in truth) + noise}\n")
        f.write("dcgan.py,0,2000,99\n")  # a script row: not a harness run, left out
    lines = ab.effects(ab.read_rows([str(path)])).splitlines()
    # 32 runs, 2 seed intercepts + 7 effects: 23 dof; the residual is the interaction, sd sqrt(32 * 0.25 / 23)
    assert lines[0] == f"step 2000: 32 runs, 2 seed(s), residual sd {np.sqrt(8 / 23):.1f} (23 dof)"
    se = 2 * np.sqrt(8 / 23 / 32)
    for k, line in zip(ab.SWITCHES, lines[4:]):
        assert line == f"| {k} | {truth[k]:+.1f} | {se:.1f} | {truth[k] / se:+.2f} |"
    with open(path) as f:  # the first half of one replicate: 8 runs, exactly as many as the unknowns
        path.with_name("half.csv").write_text("".join(f.readlines()[:9]))
    assert ab.effects(ab.read_rows([str(path.with_name("half.csv"))])).splitlines()[0] == (
        "step 2000: 8 runs, 1 seed(s), no residual left to estimate noise")
    path.with_name("few.csv").write_text("arm,seed,step,fd_resized\nours,0,2000,1\nplain,0,2000,2\n")
    assert "do not separate" in ab.effects(ab.read_rows([str(path.with_name("few.csv"))]))
    # a 2x2 of g_bn0 and adam_eps at two seeds: those two are estimated, the five held switches are listed as held;
    # effects -5 and +2, and an interaction of +-0.5 (orthogonal to both) as the residual: sd sqrt(8 * 0.25 / 4)
    cells = {"ours": 0.5, "ours+g_bn0": -5.5, "ours+adam_eps": 1.5, "ours+g_bn0+adam_eps": -2.5}
    two = ["arm,seed,step,fd_resized"] + [f"{name},{seed},2000,{offset + v}" for seed, offset in ((1, 40), (2, 45))
                                             for name, v in cells.items()]
    path.with_name("two.csv").write_text("\n".join(two) + "\n")
    lines = ab.effects(ab.read_rows([str(path.with_name("two.csv"))])).splitlines()
    assert lines[0] == f"step 2000: 8 runs, 2 seed(s), residual sd {np.sqrt(0.5):.1f} (4 dof)"
    assert lines[4 + list(ab.SWITCHES).index("g_bn0")] == "| g_bn0 | -5.0 | 0.5 | -10.00 |"
    assert lines[4 + list(ab.SWITCHES).index("adam_eps")] == "| adam_eps | +2.0 | 0.5 | +4.00 |"
    assert lines[4] == "| fit | held at ours' value | – | – |"


@pytest.mark.slow
def test_a_script_under_a_minutes_budget_is_scored_from_its_checkpoint(tiny_fashion):
    seen = []

    def scorer(fake, fit):
        seen.append((fake.shape, fit))
        return 1.0, 2.0, 3.0
    rows = list(ab.train_script("dcgan.py", 0, 100_000, 0, 1, scorer, eval_samples=7, minutes=0.01,
                                extra=("--data_dir", tiny_fashion)))
    assert len(rows) == 1 and rows[0]["budget"] == "0.01 min" and rows[0]["train_seconds"] >= 0.6
    assert seen == [((7, 32, 32, 1), "resize")] and 1 <= rows[0]["step"] < 100_000


DOCS_CSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "dcgan_gap.csv")


def test_docs_csv_is_one_long_table_whose_rows_record_their_arms_settings():
    with open(DOCS_CSV, newline="") as f:
        assert tuple(next(csv.reader(f))) == ab.FIELDS
    rows = ab.read_rows([DOCS_CSV])
    assert len(rows) == 560
    assert {r["design"] for r in rows} == {"steps_500", "steps_2000", "steps_2000_paired", "minutes_5_beside_wgan_gp",
                                           "minutes_5_side_by_side", "wgan_gp_500"}
    scripts = {"dcgan.py": ab.DCGAN_PY, "dcgan.py --first_bn channel": ab.OURS, "wgan_gp.py": ab.OURS_WGAN_GP}
    for r in rows:
        cfg = scripts[r["arm"]] if ab.is_script(r["arm"]) else ab.config(r["arm"])
        assert {k: r[k] for k in cfg} == {k: str(v) for k, v in cfg.items()}, r
        assert r["fd_resized"] and (r["fit"] == "resize" or r["fd_padded"] == r["fd_own"])  # padded: own geometry


def test_the_pages_answer_comes_out_of_the_csv():
    rows = ab.read_rows([DOCS_CSV], "steps_2000")
    line = [l for l in ab.compare(rows, "dcgan.py,ours+g_bn0", "plain", permutations=2000).splitlines()
            if l.startswith("| step 2000 |")][0]
    assert line.startswith("| step 2000 | 45.0 ± 5.1 (26) | 41.2 ± 3.0 (13) | +3.8 ± 1.3 | +2.93 |")
    fit = ab.effects(rows, one_baseline=True).split("step 2000: ")[1].splitlines()
    assert fit[0] == "130 runs, one baseline, residual sd 4.6 (122 dof)"
    assert fit[5].startswith("| bn_eps | -1.2 | 1.1 |") and fit[9].startswith("| adam_eps | -1.7 | 1.1 |")
    minutes = ab.summary(ab.read_rows([DOCS_CSV], "minutes_5_side_by_side")).splitlines()
    assert minutes[2:] == ["| dcgan.py | 77.6 ± 3.6 (3) |", "| plain | 77.6 ± 10.7 (3) |"]


def test_arms_and_csv_columns_are_checked_before_anything_trains(tmp_path):
    args = ab.parse_args(["--configs", "dcgan.py --first_bn channel", "factorial", "--seeds", "0"])
    assert args.configs[0] == "dcgan.py --first_bn channel" and args.configs[1:] == ab.FACTORIAL
    with pytest.raises(common.RunError, match="only dcgan.py takes flags"):
        ab.parse_args(["--configs", "wgan_gp.py --n_critic 1"])
    with pytest.raises(common.RunError, match="unknown arm"):
        ab.parse_args(["--configs", "ours+nothing"])
    path = tmp_path / "rows.csv"
    ab.append_row(str(path), dict(arm="ours", design="d", seed=0, step=1, fd_resized=2.0))
    ab.append_row(str(path), dict(arm="ours", design="d", seed=1, step=1, fd_resized=3.0))
    assert [r["seed"] for r in ab.read_rows([str(path)], "d")] == ["0", "1"]
    path.with_name("other.csv").write_text("config,seed\nours,0\n")
    with pytest.raises(common.RunError, match="other columns"):
        ab.append_row(str(path.with_name("other.csv")), dict(arm="ours"))
    assert path.with_name("other.csv").read_text() == "config,seed\nours,0\n"

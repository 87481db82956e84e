import keras
import numpy as np
import pytest

from training.optimizers import OPTIMIZERS, build_optimizer
from training.schedules import build_learning_rate


def one_step(optimizer, *gradients, start=1.0):
    """Variables at `start`, one update with `gradients`; returns the variables' new values."""
    variables = [keras.Variable(np.full(np.shape(g), start, "float32")) for g in gradients]
    optimizer.apply_gradients([(np.asarray(g, "float32"), v) for g, v in zip(gradients, variables)])
    return [v.numpy() for v in variables]


@pytest.mark.parametrize(
    "name, class_name",
    [
        ("sgd", "SGD"),
        ("adam", "Adam"),
        ("adamw", "AdamW"),
        ("rmsprop", "RMSprop"),
        ("adagrad", "Adagrad"),
        ("nadam", "Nadam"),
    ],
)
def test_each_name_builds_its_optimizer(name, class_name):
    optimizer = build_optimizer(name, 0.05)
    assert type(optimizer).__name__ == class_name
    assert optimizer.get_config()["learning_rate"] == pytest.approx(0.05)
    assert name in OPTIMIZERS


def test_knobs_land_in_the_config():
    config = build_optimizer(
        "sgd",
        0.1,
        momentum=0.8,
        nesterov=True,
        weight_decay=5e-4,
        clip_norm=2.0,
        ema=True,
        ema_momentum=0.999,
    ).get_config()
    assert config["momentum"] == pytest.approx(0.8)
    assert config["nesterov"] is True
    assert config["weight_decay"] == pytest.approx(5e-4)
    assert config["clipnorm"] == 2.0
    assert config["clipvalue"] is None and config["global_clipnorm"] is None
    assert config["use_ema"] is True and config["ema_momentum"] == 0.999
    assert build_optimizer("adam", 0.1, clip_value=0.5).get_config()["clipvalue"] == 0.5
    assert build_optimizer("adam", 0.1, global_clip_norm=3.0).get_config()["global_clipnorm"] == 3.0
    assert build_optimizer("adam", 0.1).get_config()["weight_decay"] is None
    assert build_optimizer("adamw", 0.1).get_config()["weight_decay"] == 0.0


def test_schedule_is_accepted_as_learning_rate():
    schedule = build_learning_rate(
        "step", base_lr=0.1, epochs=20, steps_per_epoch=1, step_epochs=1, step_factor=0.5
    )
    optimizer = build_optimizer("sgd", schedule, momentum=0.0)
    # First step at 0.1, second at 0.05.
    variable = keras.Variable(np.array([1.0], "float32"))
    for _ in range(2):
        optimizer.apply_gradients([(np.array([1.0], "float32"), variable)])
    assert variable.numpy() == pytest.approx([1.0 - 0.1 - 0.05])


def test_unclipped_huge_gradient_moves_the_weights_hugely():
    [moved] = one_step(build_optimizer("sgd", 1.0, momentum=0.0), [3e6, 4e6])
    assert moved == pytest.approx([1 - 3e6, 1 - 4e6])


def test_clip_norm_bounds_each_gradient_norm():
    optimizer = build_optimizer("sgd", 1.0, momentum=0.0, clip_norm=1.0)
    first, second = one_step(optimizer, [3e6, 4e6], [0.0, 5e6])
    assert first == pytest.approx([1 - 0.6, 1 - 0.8], rel=1e-5)
    assert second == pytest.approx([1.0, 0.0], abs=1e-5)


def test_global_clip_norm_bounds_all_gradients_together():
    optimizer = build_optimizer("sgd", 1.0, momentum=0.0, global_clip_norm=1.0)
    first, second = one_step(optimizer, [3e6], [4e6])
    assert first == pytest.approx([1 - 0.6], rel=1e-5)
    assert second == pytest.approx([1 - 0.8], rel=1e-5)


def test_clip_value_bounds_each_entry():
    optimizer = build_optimizer("sgd", 1.0, momentum=0.0, clip_value=0.5)
    [moved] = one_step(optimizer, [1e6, -1e6, 0.1])
    assert moved == pytest.approx([0.5, 1.5, 0.9], rel=1e-6)


def test_global_clipping_bounds_a_fit_step_with_a_huge_loss():
    # A squared error of ~1e12: the clipped SGD step moves the weights by exactly lr * clip.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(build_optimizer("sgd", 0.1, momentum=0.0, global_clip_norm=1.0), loss="mse")
    before = model.get_weights()[0]
    model.fit(np.array([[1e3, 1e3]], "float32"), np.array([[1e6]], "float32"), verbose=0)
    change = model.get_weights()[0] - before
    assert np.linalg.norm(change) == pytest.approx(0.1, rel=1e-4)


def test_weight_decay_is_decoupled_from_the_gradient():
    # Zero gradient: only the decay moves the weight, w -= lr * wd * w = 2 - 0.1 * 0.5 * 2.
    for name in ("sgd", "adamw", "adam"):
        [moved] = one_step(build_optimizer(name, 0.1, weight_decay=0.5), [0.0], start=2.0)
        assert moved == pytest.approx([1.9], rel=1e-6), name


def test_sgd_momentum_and_nesterov_updates():
    # lr 0.1, momentum 0.9, gradient 1: m = -0.1; plain w += m, Nesterov w += 0.9 m - 0.1.
    [plain] = one_step(build_optimizer("sgd", 0.1, momentum=0.9), [1.0])
    [nesterov] = one_step(build_optimizer("sgd", 0.1, momentum=0.9, nesterov=True), [1.0])
    assert plain == pytest.approx([0.9], rel=1e-6)
    assert nesterov == pytest.approx([0.81], rel=1e-6)


def test_ema_weights_replace_the_weights_at_the_end():
    optimizer = build_optimizer("sgd", 0.1, momentum=0.0, ema=True, ema_momentum=0.9)
    variable = keras.Variable(np.array([1.0], "float32"))
    for _ in range(2):
        optimizer.apply_gradients([(np.array([1.0], "float32"), variable)])
    assert variable.numpy() == pytest.approx([0.8])
    # The average starts at the first step's weights: 0.9 * 0.9 + 0.1 * 0.8.
    optimizer.finalize_variable_values([variable])
    assert variable.numpy() == pytest.approx([0.89], rel=1e-6)


@pytest.mark.parametrize(
    "name, lr, kwargs, message",
    [
        ("lamb", 0.1, {}, "Unknown optimizer 'lamb'. Valid: sgd, adam, adamw, rmsprop, adagrad"),
        ("sgd", 0.0, {}, "learning_rate must be > 0, got 0.0"),
        ("sgd", -1.0, {}, "learning_rate must be > 0"),
        ("sgd", 0.1, {"momentum": 1.0}, "momentum must be in \\[0, 1\\), got 1.0"),
        ("sgd", 0.1, {"momentum": 0.0, "nesterov": True}, "nesterov needs SGD momentum > 0"),
        ("adam", 0.1, {"nesterov": True}, "nesterov applies to 'sgd' only"),
        ("adamw", 0.1, {"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ("sgd", 0.1, {"clip_norm": 1.0, "clip_value": 1.0}, "Choose at most one of clip_value"),
        ("sgd", 0.1, {"clip_norm": 0.0}, "clip_norm must be > 0, got 0.0"),
        ("sgd", 0.1, {"global_clip_norm": -1}, "global_clip_norm must be > 0"),
        ("sgd", 0.1, {"ema": True, "ema_momentum": 1.0}, "ema_momentum must be in \\[0, 1\\)"),
    ],
)
def test_bad_names_and_values_say_what_is_allowed(name, lr, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(name, lr, **kwargs)


def test_momentum_rho_and_epsilon_reach_the_optimizers_that_read_them():
    from tests.training.test_config import parse
    from training.checks import ConfigError
    from training.trainer import build_model, compile_model

    def built(argv):
        config = parse(argv)
        model = build_model(config, (32, 32, 1), 10, [0.0], [1.0])
        compile_model(model, config, steps_per_epoch=1, replicas=1, num_classes=10)
        return model.optimizer.get_config()

    rmsprop = built(
        [
            "--optimizer",
            "rmsprop",
            "--momentum",
            "0.5",
            "--rho",
            "0.95",
            "--epsilon",
            "1e-5",
            "--schedule",
            "constant",
        ]
    )
    assert (rmsprop["momentum"], rmsprop["rho"], rmsprop["epsilon"]) == (0.5, 0.95, 1e-5)
    adam = built(["--optimizer", "adam", "--epsilon", "1e-8", "--schedule", "constant"])
    assert adam["epsilon"] == 1e-8
    sgd = built(["--optimizer", "sgd", "--schedule", "constant"])
    assert sgd["momentum"] == 0.9 and "epsilon" not in sgd
    # Unset, the momentum is each optimizer's usual one: 0.9 for SGD, none for RMSprop.
    assert built(["--optimizer", "rmsprop", "--schedule", "constant"])["momentum"] == 0.0
    for name in ("adamw", "nadam", "adagrad"):
        assert build_optimizer(name, 0.1, epsilon=1e-4).get_config()["epsilon"] == 1e-4
    for flags, message in (
        (["--rho", "1.0"], r"rho must be in \[0, 1\), got 1.0"),
        (["--epsilon", "0"], "epsilon must be > 0, got 0.0"),
        (["--momentum", "1.5"], r"momentum must be in \[0, 1\)"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse(flags).validate()


def test_rmsprop_momentum_changes_the_update():
    # lr 0.1, rho 0.9, gradient 1: the first step is 0.1 / sqrt(0.1 + eps) with or without
    # momentum; the second adds momentum 0.5 times the first step.
    def two_steps(momentum):
        optimizer = build_optimizer("rmsprop", 0.1, momentum=momentum, rho=0.9, epsilon=1e-7)
        variable = keras.Variable(np.array([1.0], "float32"))
        for _ in range(2):
            optimizer.apply_gradients([(np.array([1.0], "float32"), variable)])
        return float(variable.numpy()[0])

    first = 0.1 / np.sqrt(0.1 + 1e-7)
    second = 0.1 / np.sqrt(0.19 + 1e-7)
    assert two_steps(0.0) == pytest.approx(1 - first - second, rel=1e-5)
    assert two_steps(0.5) == pytest.approx(1 - first - (0.5 * first + second), rel=1e-5)

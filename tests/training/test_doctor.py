"""The doctor passes a healthy setup and catches the mistakes it exists for, each planted in a
tiny model on the 8x8 digits (a few hundred training steps at most per test)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from training import checks
from training.doctor import CHECKS, Budget, examine
from training.doctor.__main__ import main
from training.doctor.config_run import rerun_command
from training.doctor.session import as_batches

SMALL = Budget(
    loss_batches=4,
    overfit_steps=100,
    learn_steps=150,
    lr_range_steps=100,
    probe_steps=10,
    eval_examples=360,
)


@pytest.fixture(scope="module")
def digits():
    """(x_train, y_train), (x_val, y_val): 0..255 pixels, 8x8x1, int labels."""
    data = load_digits()
    images = np.round(data.images * (255 / 16)).astype("float32")[..., None]
    labels = data.target.astype("int64")
    return (images[:1437], labels[:1437]), (images[1437:], labels[1437:])


def small_cnn(x_train, *, normalize=True, head="softmax"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = inputs
    if normalize:
        x = keras.layers.Normalization(mean=x_train.mean(), variance=x_train.var())(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer="he_normal")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation=head)(x)
    return keras.Model(inputs, outputs)


def verdicts(report):
    return {(r.check, r.name): r.verdict for r in report.results}


def test_healthy_model_passes_every_check(digits, tmp_path):
    train, validation = digits
    model = small_cnn(train[0])
    # The range test puts this model's loss minimum near 0.3: Adam's usual 1e-3 is needlessly
    # slow there (lr_range warns), 1e-2 is not.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    report = examine(model, train, validation, budget=SMALL, seed=1, output_dir=tmp_path)
    assert report.checks == dict.fromkeys(CHECKS, "pass"), report.table()
    assert report.verdict == "pass" and not report.failed
    # Every check worked on copies: the model keeps its weights.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    # The range test ends around 10: its suggestion is well inside the 8 decades it spans.
    assert 1e-5 < report.findings["suggested_lr"] < 1.0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["verdict"] == "pass" and len(saved["results"]) == len(report.results)
    for name in ("augmented.png", "lr_range.png", "activations.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert name in saved["images"]


def test_shuffled_labels_fail_learns(digits):
    (x, y), validation = digits
    shuffled = np.random.default_rng(0).permutation(y)
    report = examine(
        small_cnn(x), (x, shuffled), validation, checks=["overfit_small", "learns"], budget=SMALL
    )
    assert report.checks == {"overfit_small": "pass", "learns": "fail"}, report.table()
    assert "suspect the labels" in report.result("learns", "validation accuracy").advice


def test_learning_rate_of_10_is_caught(digits):
    train, validation = digits
    model = small_cnn(train[0])
    model.compile(optimizer=keras.optimizers.Adam(10.0), loss="sparse_categorical_crossentropy")
    report = examine(
        model, train, validation, checks=["learns", "lr_range", "numerics"], budget=SMALL
    )
    assert report.findings["suggested_lr"] <= 10.0 / 100
    assert report.checks["lr_range"] == "fail"
    assert report.checks["learns"] == "fail", report.table()


def test_logits_head_with_a_probability_loss_fails_initial_loss(digits):
    train, validation = digits
    model = small_cnn(train[0], head=None)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy())
    report = examine(model, train, validation, checks=["initial_loss"], budget=SMALL)
    assert verdicts(report)[("initial_loss", "head vs loss")] == "fail", report.table()
    assert report.checks == {"initial_loss": "fail"}
    assert "from_logits=True" in report.result("initial_loss", "head vs loss").advice


def test_unnormalized_inputs_warn_in_data(digits):
    train, validation = digits
    report = examine(
        small_cnn(train[0], normalize=False), train, validation, checks=["data"], budget=SMALL
    )
    assert verdicts(report) == {
        ("data", "label range"): "pass",
        ("data", "class balance"): "pass",
        ("data", "input scale"): "warn",
        ("data", "train/test duplicates"): "pass",
    }, report.table()


def test_deep_sigmoid_network_has_vanishing_gradients(digits):
    train, validation = digits
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(
        keras.layers.Normalization(mean=train[0].mean(), variance=train[0].var())(inputs)
    )
    for index in range(20):
        x = keras.layers.Dense(32, activation="sigmoid", name=f"dense{index}")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    report = examine(model, train, validation, checks=["activations_gradients"], budget=SMALL)
    flow = report.result("activations_gradients", "gradient flow")
    assert flow.verdict == "fail" and "vanishing" in flow.advice, report.table()
    assert verdicts(report)[("activations_gradients", "activations")] == "pass"


def test_numerics_follows_the_loss_scale_under_mixed_float16(digits):
    train, validation = digits
    keras.config.set_dtype_policy("mixed_float16")  # the conftest fixture resets it
    model = small_cnn(train[0])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    report = examine(
        model, train, validation, checks=["numerics"], budget=Budget(learn_steps=30, loss_batches=1)
    )
    assert verdicts(report) == {
        ("numerics", "loss"): "pass",
        ("numerics", "weights and gradients"): "pass",
        ("numerics", "loss scale"): "pass",
    }, report.table()
    assert "after 30 steps (started 32768)" in report.result("numerics", "loss scale").measured


def test_zero_initialized_zoo_model_fails_through_the_command(tmp_path, capsys):
    argv = [
        "--model",
        "stagewise_cnn",
        "--image-size",
        "8",
        "--kernel-initializer",
        "zeros",
        "--set",
        "model.options.filters=4",
        "--set",
        "model.options.dense_layers=0",
        "--precision",
        "float32",
        "--output-dir",
        str(tmp_path),
        "--check",
        "initial_loss",
        "--check",
        "activations_gradients",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    report = json.loads((tmp_path / "doctor" / "stagewise_cnn-digits" / "report.json").read_text())
    found = {(r["check"], r["name"]): r["verdict"] for r in report["results"]}
    assert found[("initial_loss", "predictions at init")] == "fail"
    assert found[("activations_gradients", "activations")] == "fail"
    assert found[("activations_gradients", "gradient flow")] == "fail"
    assert report["checks"] == {"initial_loss": "fail", "activations_gradients": "fail"}
    assert "predictions at init" in capsys.readouterr().out


def test_unknown_check_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--check", "lr_rnage", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'lr_rnage'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    with pytest.raises(checks.ConfigError, match="Did you mean 'lr_range'"):
        examine(
            small_cnn(np.zeros((1, 8, 8, 1))),
            (np.zeros((4, 8, 8, 1)), np.zeros(4)),
            checks=["lr_rnage"],
        )


def test_rerun_command_replaces_the_learning_rate_and_drops_checks():
    argv = [
        "--model",
        "resnet20",
        "--lr",
        "0.1",
        "--check",
        "lr_range",
        "--set",
        "optimizer.lr=0.5",
        "--set",
        "model.options.width=2",
        "--check=data",
    ]
    assert rerun_command(argv, 0.00123) == (
        "python -m training.run --model resnet20 --set model.options.width=2 --lr 0.0012"
    )


def test_the_checks_data_arrives_batched_and_without_the_autotune_thread():
    images, labels = np.zeros((10, 4, 4, 1), np.float32), np.arange(10) % 2
    given = [
        (images, labels),
        tf.data.Dataset.from_tensor_slices((images, labels)),
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(3),
    ]
    batched = [as_batches(data, 4, shuffle=True, seed=0) for data in given]
    assert [[len(x) for x, _ in dataset] for dataset in batched] == [
        [4, 4, 2],
        [4, 4, 2],
        [3, 3, 3, 1],
    ]
    # The checks make and delete many iterators: none waits for an autotune thread.
    assert [dataset.options().autotune.enabled for dataset in batched] == [False] * 3
    assert as_batches(None, 4, shuffle=False, seed=0) is None

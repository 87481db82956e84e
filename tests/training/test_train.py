"""The trainer end to end: the embedded default, what a run leaves behind, naming, resume, CLI."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import zoo
from tests.conftest import REPO
from training import TrainConfig, hardware, train
from training.config import from_dict


def quick_config(tmp_path, **overrides):
    """The embedded default (lenet5 on digits), shortened for tests."""
    values = {"epochs": 3, "output": {"output_dir": str(tmp_path)}}
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            values.setdefault(section, {})[field] = value
        else:
            values[key] = value
    return TrainConfig().replace(values)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The README's main command, `python -m training.run`, as a function call."""
    output = tmp_path_factory.mktemp("runs")
    return train(TrainConfig().replace({"output": {"output_dir": str(output)}}))


def test_embedded_default_reaches_95_percent_on_digits(default_run):
    assert default_run.metrics["test_accuracy"] >= 0.95
    assert default_run.run_dir.name == "lenet5-digits"


def test_a_run_leaves_everything_behind(default_run):
    run = default_run.run_dir
    for name in (
        "model.keras",
        "serving/1/saved_model.pb",
        "config.yaml",
        "history.csv",
        "metrics.json",
        "curves.png",
        "class_names.json",
    ):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "test_top5_accuracy",
        "test_loss",
        "epochs_completed",
        "train_seconds",
        "images_per_second",
    ):
        assert key in metrics
    assert metrics["epochs_completed"] == len(default_run.history["loss"])
    # The pools this process runs with (fixed by whichever run or test started TensorFlow).
    assert metrics["threads"] == hardware.threads_in_effect()
    # The parts each training batch ran in: two halves on 2 cores, whole elsewhere.
    assert metrics["sub_batches"] == hardware.resolve_sub_batches(None, 32)
    assert ("call" in vars(default_run.model)) == (metrics["sub_batches"] > 1)
    # Epochs count from 1 everywhere: history.csv, curves.png and best_epoch agree.
    assert default_run.history["epoch"] == list(range(1, metrics["epochs_completed"] + 1))
    best = default_run.history["val_loss"].index(min(default_run.history["val_loss"]))
    assert metrics["best_epoch"] == default_run.history["epoch"][best]
    assert json.loads((run / "class_names.json").read_text()) == [str(d) for d in range(10)]


def test_the_saved_model_serves_raw_pixels(default_run):
    run = default_run.run_dir
    images = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 1)).astype("float32")
    expected = default_run.model.predict(images, verbose=0)
    served = tf.saved_model.load(str(run / "serving" / "1"))
    probabilities = served.signatures["serving_float"](image=tf.constant(images))["probabilities"]
    np.testing.assert_allclose(probabilities.numpy(), expected, atol=1e-5)
    reloaded = keras.saving.load_model(run / "model.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)


def test_the_saved_config_repeats_the_run(default_run):
    saved = from_dict(yaml.safe_load((default_run.run_dir / "config.yaml").read_text()))
    assert saved.model.name == "lenet5"
    assert saved.data.image_size == 32  # resolved from the model's default input
    saved.validate()


def test_a_finished_run_is_never_overwritten(tmp_path):
    first = train(quick_config(tmp_path, epochs=1))
    model_bytes = (first.run_dir / "model.keras").read_bytes()
    second = train(quick_config(tmp_path, epochs=1))
    assert second.run_dir.name == "lenet5-digits-2"
    assert (first.run_dir / "model.keras").read_bytes() == model_bytes
    third = train(quick_config(tmp_path, epochs=1, output__overwrite=True))
    assert third.run_dir == first.run_dir


class Crash(Exception):
    pass


class CrashAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Crash(f"simulated preemption after epoch {self.epoch}")


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path):
    config = quick_config(
        tmp_path,
        epochs=4,
        output__run_name="resumable",
        callbacks__early_stopping_patience=0,
        callbacks__checkpoint_interval=0,  # a backup at every epoch end, however short
    )
    with pytest.raises(Crash):
        train(config, extra_callbacks=[CrashAfterEpoch(2)])
    run_dir = tmp_path / "resumable"
    assert not (run_dir / "metrics.json").exists()

    resumed = train(config)
    assert resumed.resumed and resumed.run_dir == run_dir
    assert resumed.metrics["epochs_completed"] == 4
    history = resumed.history
    assert len(history["loss"]) == 4  # one row per epoch, none repeated
    # The optimizer state came back too: 4 epochs of steps in total, not 2.
    steps_per_epoch = int(np.ceil(resumed.metrics["num_examples"]["train"] / 32))
    assert int(resumed.model.optimizer.iterations.numpy()) == 4 * steps_per_epoch


def test_resuming_with_a_different_config_is_refused(tmp_path):
    config = quick_config(tmp_path, epochs=3, output__run_name="r")
    with pytest.raises(Crash):
        train(config, extra_callbacks=[CrashAfterEpoch(1)])
    with pytest.raises(ValueError, match="different config"):
        train(config.replace({"optimizer": {"lr": 0.5}}))


def test_empty_splits_are_refused_before_training(tmp_path):
    with pytest.raises(
        ValueError, match=r"validation split is empty .*early stopping.*best\.keras"
    ):
        train(quick_config(tmp_path, data__val_split=0.0))
    with pytest.raises(ValueError, match="test split is empty"):
        train(quick_config(tmp_path, data__test_split=0.0))
    assert list(tmp_path.iterdir()) == []  # refused before a run directory was made


def test_the_val_accuracy_drop_stop_needs_a_validation_split(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"validation split is empty .*but the val_accuracy drop "
        r"stop \(--max-val-drop\) watch",
    ):
        train(
            quick_config(
                tmp_path,
                data__val_split=0.0,
                callbacks__early_stopping_patience=0,
                callbacks__checkpoint_best=False,
                callbacks__max_val_drop=0.1,
            )
        )
    assert list(tmp_path.iterdir()) == []


def test_the_same_seed_repeats_a_run(tmp_path):
    a = train(quick_config(tmp_path / "a", epochs=2))
    b = train(quick_config(tmp_path / "b", epochs=2))
    assert a.history["loss"] == b.history["loss"]
    # Running one step per call into TensorFlow instead of the default 16 changes the speed,
    # not the result.
    assert a.model.steps_per_execution == 16
    one = train(quick_config(tmp_path / "one", epochs=2, hardware__steps_per_execution=1))
    assert one.model.steps_per_execution == 1
    np.testing.assert_allclose(one.history["loss"], a.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(one.history["val_loss"], a.history["val_loss"], rtol=1e-6)


def test_cli_rejects_bad_values_before_training(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.run", "--lr", "-1", "--output-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "optimizer.lr must be > 0, got -1.0" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_trains_and_reports_json(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.run",
            "--epochs",
            "1",
            "--output-dir",
            str(tmp_path),
            "--model",
            "stagewise_cnn",
            "--image-size",
            "16",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Keras prints one line per epoch to stdout when it is not a terminal; the report is last.
    report = json.loads(result.stdout[result.stdout.index("\n{") + 1 :])
    assert report["epochs_completed"] == 1
    assert (tmp_path / "stagewise_cnn-digits" / "serving" / "1").is_dir()
    # Not a terminal: one line per epoch (steps, time, metrics), no progress bar redraws.
    epoch_lines = re.findall(
        r"^\d+/\d+ - \d+s - .*val_loss: .*learning_rate: ", result.stdout, re.M
    )
    assert len(epoch_lines) == 1 and "\r" not in result.stdout


@pytest.mark.slow
def test_lenet5_reaches_98_percent_on_mnist_in_one_epoch(tmp_path, shared_datasets, mnist_data_dir):
    result = train(
        TrainConfig().replace(
            {
                "epochs": 1,
                "data": {
                    "dataset": "mnist",
                    "manual_dir": str(shared_datasets / "mnist"),
                    "data_dir": str(mnist_data_dir),
                },
                "output": {"output_dir": str(tmp_path)},
            }
        )
    )
    assert result.metrics["num_examples"]["test"] == 10_000
    # The default config (adam 2e-3 annealed by cosine, label smoothing 0.1, batch 32) measures
    # 0.9824 here, deterministically (seed 1: 0.9839).
    assert result.metrics["test_accuracy"] >= 0.98


def test_init_from_a_previous_run_starts_from_its_weights(default_run, tmp_path):
    from training.trainer import build_model

    config = TrainConfig().replace({"model": {"init_from": str(default_run.run_dir)}})
    model = build_model(config, (32, 32, 1), 10, mean=[0.0], std=[1.0])
    trained_backbone = default_run.model.get_layer("lenet5")
    for got, want in zip(model.get_layer("lenet5").get_weights(), trained_backbone.get_weights()):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="init_from must be a run directory holding model.keras"):
        build_model(
            config.replace({"model": {"init_from": str(tmp_path)}}),
            (32, 32, 1),
            10,
            mean=[0.0],
            std=[1.0],
        )


@pytest.fixture(scope="module")
def two_signs(shared_datasets, tmp_path_factory):
    """Sign Language Digits' classes 0 and 1 (real photos): a folder of symlinks."""
    root = tmp_path_factory.mktemp("two_signs")
    for name in ("0", "1"):
        (root / name).mkdir()
        for path in (shared_datasets / "sign_language_digits" / name).iterdir():
            (root / name / path.name).symlink_to(path)
    return root


def test_binary_trains_one_sigmoid_unit_and_exports_it(two_signs, tmp_path):
    result = train(
        TrainConfig().replace(
            {
                "epochs": 10,
                "model": {"binary": True},
                "data": {"dataset": str(two_signs), "test_split": 0.25},
                "hardware": {"precision": "float32"},
                "output": {"output_dir": str(tmp_path)},
            }
        )
    )
    model = result.model
    assert model.output_shape == (None, 1)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    assert model.loss.get_config()["label_smoothing"] == 0.1
    # Measured at seed 0: 0.961 (99 of 103 test photos); seeds 1 and 2: 0.990, 1.0. A two-way
    # softmax on the same splits: 0.971, 0.990, 1.0.
    assert result.metrics["test_accuracy"] >= 0.94
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["num_classes"] == 2 and metrics["num_examples"]["test"] == 103
    assert {"test_accuracy", "test_loss", "best_val_accuracy"} <= set(metrics)
    assert "test_top5_accuracy" not in metrics
    assert json.loads((result.run_dir / "class_names.json").read_text()) == ["0", "1"]

    images = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    assert expected.shape == (4, 1) and np.all((expected > 0) & (expected < 1))
    served = tf.saved_model.load(str(result.run_dir / "serving" / "1"))
    outputs = served.signatures["serving_float"](image=tf.constant(images))
    # One sigmoid unit p is served as the two classes' probabilities [1 - p, p].
    np.testing.assert_allclose(
        outputs["probabilities"].numpy(), np.hstack([1 - expected, expected]), atol=1e-5
    )
    assert [name.decode() for name in outputs["class_name"].numpy()] == [
        ["0", "1"][int(p > 0.5)] for p in expected[:, 0]
    ]


def test_binary_needs_exactly_two_classes_before_a_run_directory_exists(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"--binary needs a dataset of exactly two classes, but "
        r"digits has 10 \(0, 1, 2, .*9\)",
    ):
        train(quick_config(tmp_path, model__binary=True))
    assert list(tmp_path.iterdir()) == []


def test_leaky_slope_reaches_the_builder():
    from training.trainer import builder_kwargs

    config = TrainConfig().replace({"model": {"activation": "leaky_relu", "leaky_slope": 0.01}})
    assert builder_kwargs(config, (32, 32, 1), 10)["leaky_slope"] == 0.01
    assert "leaky_slope" not in builder_kwargs(TrainConfig(), (32, 32, 1), 10)  # the builder's own
    with pytest.raises(ValueError, match=r"leaky_slope must be in \[0, 1\).*got -0.1"):
        config.replace({"model": {"leaky_slope": -0.1}}).validate()


def _takes_leaky_slope():
    import inspect

    import zoo

    return "leaky_slope" in inspect.signature(zoo.get_builder("lenet5")).parameters


@pytest.mark.skipif(not _takes_leaky_slope(), reason="the zoo builders take no leaky_slope yet")
def test_leaky_slope_sets_the_slope_of_every_leaky_relu_in_the_model():
    from training.trainer import build_model

    config = TrainConfig().replace({"model": {"activation": "leaky_relu", "leaky_slope": 0.05}})
    model = build_model(config, (32, 32, 1), 10, [0.0], [1.0])
    leaky = [
        layer
        for layer in model.get_layer("lenet5").layers
        if isinstance(layer, keras.layers.LeakyReLU)
    ]
    assert leaky and all(layer.negative_slope == pytest.approx(0.05) for layer in leaky)
    np.testing.assert_allclose(
        leaky[0](np.array([[-2.0, 3.0]], "float32")), [[-0.1, 3.0]], rtol=1e-6
    )


@pytest.mark.parametrize("built_first", [False, True])
def test_build_for_fit_makes_every_variable_before_the_first_step(built_first):
    # Without it the train step's first trace creates the optimizer's variables, and TensorFlow
    # traces the step a second time: the slower first epoch build_for_fit removes.
    from training.trainer import build_for_fit, compile_model

    keras.backend.clear_session()
    model = zoo.create("lenet5", num_classes=10)
    compile_model(model, TrainConfig(), steps_per_epoch=2, replicas=1, num_classes=10)
    images = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 1)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(64) % 10, 10)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    if built_first:
        build_for_fit(model, data)
    created = []

    def record(next_creator, **kwargs):
        created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(record):
        model.fit(data, epochs=1, verbose=0, shuffle=False)
    if built_first:
        assert created == []
    else:  # Adam's slots, made in the first trace: what build_for_fit's absence looks like
        assert "c1_conv_kernel_momentum" in created and "c1_conv_kernel_velocity" in created


def test_fit_told_the_epoch_steps_makes_one_training_iterator_per_epoch(monkeypatch):
    # Keras infers the count itself, but then makes two iterators per epoch, and each instantiates
    # the pipeline's map functions (training.trainer.epoch_steps).
    from training.trainer import epoch_steps

    made = []
    make_iterator = tf.data.Dataset.__iter__

    def counted(dataset):
        made.append(dataset)
        return make_iterator(dataset)

    monkeypatch.setattr(tf.data.Dataset, "__iter__", counted)
    images = np.zeros((100, 4), np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, images[:, :1])).batch(32)
    assert epoch_steps(dataset) == 4
    assert epoch_steps(dataset.filter(lambda x, y: True)) is None  # unknown: Keras counts
    assert epoch_steps(dataset.take(0)) is None
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=3)
    batches = []
    count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(1))
    for steps, iterators in ((None, 2 * 3), (epoch_steps(dataset), 3 + 1)):
        made.clear()
        batches.clear()
        model.fit(
            dataset, steps_per_epoch=steps, epochs=3, verbose=0, callbacks=[count], shuffle=False
        )
        assert len(made) == iterators
        assert len(batches) == 3 * 2  # two executions per epoch (3 + 1 batches): every epoch whole


def test_training_and_validation_pipelines_keep_what_they_make_where_splits_are_cached(
    monkeypatch,
):
    from tests.training.test_data import counted
    from training import data
    from training.trainer import PreparedData, make_pipelines

    def passes(config, budget=data.KEPT_BYTES):
        """How often three passes over each pipeline read its split."""
        monkeypatch.setattr(data, "KEPT_BYTES", budget)
        reads = {"train": [], "validation": [], "test": []}
        splits = {name: data.stored(counted(reads[name]), cache=False) for name in reads}
        prepared = PreparedData(
            **splits,
            class_names=["even", "odd"],
            num_examples={name: 100 for name in reads},
            input_shape=(8, 8, 1),
            mean=np.zeros(1, np.float32),
            std=np.ones(1, np.float32),
            flip_safe=True,
        )
        pipelines = make_pipelines(config, prepared, 32)
        for pipeline in pipelines.values():
            for _ in range(3):
                list(pipeline)
        return {name: len(reads[name]) // 100 for name in reads}

    assert passes(TrainConfig()) == {"train": 1, "validation": 1, "test": 3}
    assert passes(TrainConfig().replace({"data": {"cache": False}})) == dict.fromkeys(
        ("train", "validation", "test"), 3
    )
    assert passes(TrainConfig(), budget=100 * 8 * 8 * 4 - 1) == dict.fromkeys(
        ("train", "validation", "test"), 3
    )

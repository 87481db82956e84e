"""Transfer learning: per-layer learning rates, freezing, the source record, the errors, two
phases with resume, ImageNet weights through Keras' cache, and the MNIST comparison."""

import hashlib
import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import yaml

import zoo
from tests.conftest import REPO
from training import TrainConfig, data, train, trainer, transfer
from training.checks import ConfigError

# ---------------------------------------------------------------------------- the optimizer


def two_layer_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="backbone_dense")(inputs)
    outputs = keras.layers.Dense(2, name="head_dense")(hidden)
    return keras.Model(inputs, outputs)


def one_step(optimizer, scaled_multiplier=None):
    """Weights before and after one step of `optimizer` (scaled on backbone_dense if given)."""
    keras.utils.set_random_seed(0)
    model = two_layer_model()
    if scaled_multiplier is not None:
        paths = [v.path for v in model.get_layer("backbone_dense").trainable_weights]
        optimizer = transfer.scale_learning_rate(optimizer, paths, scaled_multiplier)
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    y = np.random.default_rng(2).normal(size=(8, 2)).astype("float32")
    before = {
        layer: model.get_layer(layer).get_weights() for layer in ("backbone_dense", "head_dense")
    }
    model.train_on_batch(x, y)
    after = {layer: model.get_layer(layer).get_weights() for layer in before}
    return {layer: [a - b for a, b in zip(after[layer], before[layer])] for layer in before}


def test_backbone_updates_are_the_multiplier_times_sgd_with_a_schedule_and_weight_decay():
    from training.schedules import build_learning_rate

    def sgd():
        schedule = build_learning_rate(
            "cosine", base_lr=0.1, epochs=3, steps_per_epoch=2, warmup_epochs=1
        )
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=0.05)

    plain, scaled = one_step(sgd()), one_step(sgd(), scaled_multiplier=0.1)
    for got, want in zip(scaled["backbone_dense"], plain["backbone_dense"]):
        assert np.abs(want).min() > 1e-6
        # float32 weights near 1 subtract to about 1e-7 exactly
        np.testing.assert_allclose(got, 0.1 * want, rtol=1e-4, atol=2e-7)
    for got, want in zip(scaled["head_dense"], plain["head_dense"]):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_with_adam_the_backbone_moves_by_the_multiplier_times_the_learning_rate():
    # Adam's first step moves every weight by about lr whatever the gradient's scale, which is
    # why scaling gradients could not give pretrained layers a smaller learning rate.
    deltas = one_step(keras.optimizers.Adam(0.01), scaled_multiplier=0.1)
    np.testing.assert_allclose(np.abs(deltas["backbone_dense"][0]), 0.001, rtol=1e-3)
    np.testing.assert_allclose(np.abs(deltas["head_dense"][0]), 0.01, rtol=1e-3)


def test_the_scaled_optimizer_reloads_from_model_keras(tmp_path):
    model = two_layer_model()
    paths = [v.path for v in model.get_layer("backbone_dense").trainable_weights]
    optimizer = transfer.scale_learning_rate(keras.optimizers.AdamW(0.01), paths, 0.25)
    model.compile(optimizer=optimizer, loss="mse")
    model.train_on_batch(np.ones((2, 4)), np.ones((2, 2)))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras").optimizer
    assert type(reloaded).__name__ == "ScaledAdamW"
    assert reloaded.lr_multiplier == 0.25 and reloaded.scaled_variables == paths
    assert int(reloaded.iterations.numpy()) == 1


# ---------------------------------------------------------------------------- data selection


def test_classes_and_a_seeded_stratified_subset_per_class():
    splits = data.load_dataset("digits", classes=["7", "2"], subset_per_class=3, seed=0)
    assert splits.class_names == ["7", "2"]
    assert splits.num_examples["train"] == 6
    labels = [int(label) for _, label in splits.train.as_numpy_iterator()]
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    test_labels = {int(label) for _, label in splits.test.as_numpy_iterator()}
    assert test_labels == {0, 1} and splits.num_examples["test"] == 36  # 7s and 2s of 180

    def images(seed):
        split = data.load_dataset("digits", classes=["7", "2"], subset_per_class=3, seed=seed)
        return np.stack([image for image, _ in split.train.as_numpy_iterator()])

    np.testing.assert_array_equal(images(0), images(0))
    assert not np.array_equal(images(0), images(1))
    with pytest.raises(ValueError, match=r"'x' is neither a class name.*0, 1, 2"):
        data.load_dataset("digits", classes=["1", "x"])


# ---------------------------------------------------------------------------- on digits


def digits_config(tmp_path, **sections):
    values = {
        "epochs": 2,
        "output": {"output_dir": str(tmp_path)},
        "hardware": {"precision": "float32"},
        **sections,
    }
    return TrainConfig().replace(values)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """LeNet-5 with BatchNorm on the digits 0-4: BatchNorm's statistics show whether a frozen
    layer ran in inference mode."""
    output = tmp_path_factory.mktemp("source")
    return train(
        digits_config(
            output,
            data={"classes": [0, 1, 2, 3, 4]},
            model={"normalization": "batch"},
            output={"output_dir": str(output), "run_name": "source"},
        )
    )


def adapted(tmp_path, source_run, **sections):
    sections.setdefault("data", {"classes": "5,6,7,8,9", "subset_per_class": 20})
    sections["model"] = {
        "normalization": "batch",
        "init_from": str(source_run.run_dir),
        **sections.get("model", {}),
    }
    return digits_config(tmp_path, **sections)


def changed_layers(source, adapted_model):
    """The backbone layers whose weights (BatchNorm's moving statistics included) changed."""
    before, after = (model.get_layer("lenet5") for model in (source, adapted_model))
    return [
        layer.name
        for layer in after.layers
        if layer.weights
        and any(
            not np.array_equal(a, b)
            for a, b in zip(layer.get_weights(), before.get_layer(layer.name).get_weights())
        )
    ]


def test_linear_probe_trains_only_the_new_head(tmp_path, source_run, caplog):
    with caplog.at_level(logging.INFO, logger="training"):
        result = train(adapted(tmp_path, source_run, transfer={"mode": "linear_probe"}))
    # Every pretrained weight, BatchNorm's moving statistics included, is unchanged.
    assert changed_layers(source_run.model, result.model) == ["predictions_dense"]
    assert result.metrics["trainable_params"] == 84 * 5 + 5
    assert json.loads((result.run_dir / "metrics.json").read_text())["trainable_params"] == 425
    lines = [record.getMessage() for record in caplog.records]
    # After the run's first line (a warning may come before it where TensorFlow has started).
    run_line = next(i for i, line in enumerate(lines) if line.startswith("Run "))
    assert lines[run_line + 1].startswith(
        f"Weights from {source_run.run_dir}: loaded 9 layers (c1_conv, c1_norm,"
    )
    assert lines[run_line + 1].endswith("new: predictions_dense")
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    source_config = (source_run.run_dir / "config.yaml").read_bytes()
    assert saved["transfer"]["source"] == {
        "init_from": str((source_run.run_dir / "model.keras").resolve()),
        "config_sha256": hashlib.sha256(source_config).hexdigest(),
    }
    # The head saw the source's input normalization.
    standardize = result.model.get_layer("standardize")
    np.testing.assert_array_equal(standardize.mean, source_run.model.get_layer("standardize").mean)


def test_a_cached_probe_trains_the_head_exactly_as_the_whole_model_would(
    tmp_path, source_run, caplog, monkeypatch
):
    config = adapted(
        tmp_path,
        source_run,
        transfer={"mode": "linear_probe"},
        # Whole batches: the live model's steps then sum in the head's order, bit for bit.
        hardware={"precision": "mixed_bfloat16", "sub_batches": 1},
    )
    with caplog.at_level(logging.INFO, logger="training"):
        cached = train(config.replace({"output": {"run_name": "cached"}}))
    assert "the frozen layers ran once; the head trains on their features (84,)" in caplog.text
    monkeypatch.setattr(trainer, "cached_probe", lambda *args, **kwargs: None)
    live = train(config.replace({"output": {"run_name": "live"}}))
    for a, b in zip(cached.model.weights, live.model.weights):
        np.testing.assert_array_equal(a, b, err_msg=a.path)
    assert cached.history["loss"] == live.history["loss"]
    assert cached.history["val_loss"] == live.history["val_loss"]
    assert cached.metrics["test_accuracy"] == live.metrics["test_accuracy"]
    # best.keras is the whole model, taking pixels, not the head the probe fitted.
    best = keras.saving.load_model(cached.run_dir / "best.keras")
    assert best.input_shape == cached.model.input_shape
    assert int(best.optimizer.iterations) > 0  # with the optimizer state the head trained


def test_an_augmented_probe_runs_the_frozen_layers_at_every_step(tmp_path, source_run, caplog):
    with caplog.at_level(logging.INFO, logger="training"):
        train(
            adapted(
                tmp_path,
                source_run,
                epochs=1,
                transfer={"mode": "linear_probe"},
                augment={"ops": ["random_crop"]},
            )
        )
    assert "at every step (not cached: the training images are augmented)" in caplog.text


def test_partial_freezes_everything_before_the_named_block(tmp_path, source_run):
    result = train(
        adapted(tmp_path, source_run, transfer={"mode": "partial", "trainable_from": "c5"})
    )
    assert changed_layers(source_run.model, result.model) == [
        "c5_conv",
        "c5_norm",
        "f6_dense",
        "predictions_dense",
    ]  # c1..s4 frozen


def test_a_two_phase_run_resumes_in_its_second_phase(tmp_path, source_run):
    from tests.training.test_train import Crash, CrashAfterEpoch

    config = adapted(
        tmp_path,
        source_run,
        epochs=4,
        transfer={"two_phase": True, "probe_epochs": 2},
        callbacks={"early_stopping_patience": 0, "checkpoint_interval": 0},
        output={"output_dir": str(tmp_path), "run_name": "two"},
    )
    with pytest.raises(Crash):
        train(config, extra_callbacks=[CrashAfterEpoch(3)])
    assert (tmp_path / "two" / transfer.PROBE_WEIGHTS).exists()
    resumed = train(config)
    assert resumed.resumed
    assert resumed.history["epoch"] == [1, 2, 3, 4]
    # The fine-tuning phase had its own optimizer and schedule: only its 2 epochs of steps.
    steps_per_epoch = int(np.ceil(resumed.metrics["num_examples"]["train"] / 32))
    assert int(resumed.model.optimizer.iterations.numpy()) == 2 * steps_per_epoch
    assert type(resumed.model.optimizer).__name__ == "ScaledAdam"


def test_feature_layer_puts_a_new_head_on_an_earlier_layer(tmp_path, source_run):
    result = train(
        adapted(tmp_path, source_run, transfer={"mode": "linear_probe", "feature_layer": "c3_norm"})
    )
    assert result.model.get_layer("lenet5").output.shape[1:] == (10, 10, 16)
    assert result.metrics["trainable_params"] == 16 * 5 + 5  # pooled features -> 5 classes


def test_errors_come_before_any_run_directory(tmp_path, source_run):
    with pytest.raises(ValueError, match=r"does not match lenet5_modern.*c3_conv \(source"):
        train(adapted(tmp_path, source_run, model={"name": "lenet5_modern"}))
    with pytest.raises(ConfigError, match=r"'c5conv' names no layer.*nearby names: c5_conv"):
        train(
            adapted(tmp_path, source_run, transfer={"mode": "partial", "trainable_from": "c5conv"})
        )
    with pytest.raises(ConfigError, match=r"--feature-layer 'f7_dense'.*f6_dense"):
        train(adapted(tmp_path, source_run, transfer={"feature_layer": "f7_dense"}))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match=r"lenet5 has no ImageNet weights.*mobilenet, "):
        TrainConfig().replace({"model": {"init_from": "imagenet"}}).validate()
    with pytest.raises(ConfigError, match="need.* --init-from"):
        TrainConfig().replace({"transfer": {"mode": "linear_probe"}}).validate()


def test_threads_are_sized_for_the_sources_input_read_from_its_file(
    tmp_path, source_run, monkeypatch
):
    """A source trained at 64x64 sizes a lenet5 run's pools for 64x64, not lenet5's 32x32."""
    assert transfer.saved_input_shape(source_run.run_dir) == (32, 32, 1)
    wide = tmp_path / "wide.keras"
    zoo.create("lenet5", input_shape=(64, 64, 3), num_classes=5).save(wide)
    assert transfer.saved_input_shape(wide) == (64, 64, 3)
    not_a_zip = tmp_path / "broken.keras"
    not_a_zip.write_text("not a zip")
    for unreadable in (None, "imagenet", tmp_path / "missing.keras", not_a_zip):
        assert transfer.saved_input_shape(unreadable) is None  # load_source reports the file

    sized = []
    monkeypatch.setattr(
        trainer.hardware,
        "apply_threads",
        lambda mode, side, batch, precision, parts: sized.append((side, batch, precision, parts)),
    )
    trainer.apply_threads(digits_config(tmp_path, model={"init_from": str(wide)}))
    config = digits_config(tmp_path, model={"init_from": str(not_a_zip)})
    trainer.apply_threads(config.replace({"hardware": {"precision": "mixed_bfloat16"}}))
    parts = trainer.hardware.resolve_sub_batches(None, 32)  # the batch in halves on 2 cores
    # The run's precision and sub-batches.
    assert sized == [(64, 32, "float32", parts), (32, 32, "mixed_bfloat16", parts)]


def test_help_shows_the_table(capsys):
    from training.run import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    assert "small dataset     linear classifier on frozen features" in text
    for command in ("--transfer linear_probe", "--feature-layer", "--backbone-lr-multiplier 1"):
        assert command in text


# ---------------------------------------------------------------------------- ImageNet


def run_cli(args, keras_home, tmp_path):
    return subprocess.run(
        [sys.executable, "-m", "training.run", *args, "--output-dir", str(tmp_path / "runs")],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.fixture
def tiny_rgb(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(24) % 2,
        x_test=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(8) % 2,
    )
    return path


@pytest.mark.slow  # a subprocess: Keras reads KERAS_HOME once, when it is imported
def test_imagenet_offline_without_the_file_fails_at_once_naming_it(tmp_path, tiny_rgb):
    result = run_cli(
        ["--model", "mobilenet", "--init-from", "imagenet", "--dataset", str(tiny_rgb)],
        tmp_path / "empty_home",
        tmp_path,
    )
    assert result.returncode != 0
    assert "mobilenet_1_0_224_tf_no_top.h5" in result.stderr
    assert str(tmp_path / "empty_home" / "models") in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_imagenet_weights_from_keras_cache_with_their_preprocessing_inside(tmp_path, tiny_rgb):
    # MobileNet's weights file has no checksum in keras.applications, so Keras accepts a file
    # made here in a private KERAS_HOME: the same path as real weights, offline. Keras reads
    # these legacy .h5 files with its legacy loader; its writer twin makes one.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from zoo.weights import weighted_layers

    keras.utils.set_random_seed(3)
    reference = keras.applications.MobileNet(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    (tmp_path / "home" / "models").mkdir(parents=True)
    with h5py.File(tmp_path / "home" / "models" / "mobilenet_1_0_224_tf_no_top.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)

    result = run_cli(
        [
            "--model",
            "mobilenet",
            "--init-from",
            "imagenet",
            "--dataset",
            str(tiny_rgb),
            "--transfer",
            "linear_probe",
            "--epochs",
            "1",
            "--run-name",
            "net",
            "--precision",
            "float32",
        ],
        tmp_path / "home",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "net"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["transfer"]["source"] == {
        "init_from": "imagenet",
        "weights_file": "mobilenet_1_0_224_tf_no_top.h5",
    }
    model = keras.saving.load_model(run / "model.keras")
    backbone = model.get_layer("mobilenet")
    loaded = [w for layer in weighted_layers(backbone)[:-1] for w in layer.get_weights()]
    expected = [w for layer in weighted_layers(reference) for w in layer.get_weights()]
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected):  # frozen by the probe: still the file's weights
        np.testing.assert_array_equal(got, want)
    # MobileNet's preprocessing (pixels to [-1, 1]) is inside: the model takes raw pixels.
    preprocessing = model.get_layer("imagenet_preprocessing")
    np.testing.assert_allclose(preprocessing(np.array([[0.0, 127.5, 255.0]])), [[-1, 0, 1]])
    assert "standardize" not in [layer.name for layer in model.layers]


# ---------------------------------------------------------------------------- MNIST 0-4 -> 5-9


@pytest.fixture(scope="module")
def mnist_comparison(tmp_path_factory, shared_datasets):
    """The README's comparison (benchmarks/transfer_mnist.py): its source model and flags."""
    from benchmarks import transfer_mnist

    output = tmp_path_factory.mktemp("transfer_mnist")
    mnist = transfer_mnist.mnist_npz(output)
    transfer_mnist.run(transfer_mnist.pretrain_flags(output, mnist))
    return (
        transfer_mnist,
        output,
        ["--dataset", str(mnist), "--classes", transfer_mnist.TARGET_CLASSES],
    )


@pytest.mark.slow
def test_at_5_images_per_class_transfer_beats_scratch_by_5_points(mnist_comparison):
    transfer_mnist, output, dataset_flags = mnist_comparison
    accuracy = {}
    for mode in ("scratch", "finetune_lr_x1"):
        flags = transfer_mnist.adapt_flags(
            output / "source", mode, 5, 0, output / "adapt", dataset_flags
        )
        result = transfer_mnist.run(flags)
        assert result.metrics["num_examples"]["train"] == 25
        assert result.metrics["num_examples"]["test"] == 4861  # every 5-9 test image
        accuracy[mode] = result.metrics["test_accuracy"]
    # Measured at seed 0: see the README's table.
    assert accuracy["finetune_lr_x1"] >= accuracy["scratch"] + 0.05, accuracy

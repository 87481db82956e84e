"""Callbacks on a tiny Dense model over scikit-learn's 8x8 digits (real data, seconds per fit)."""

import csv
import os
import sys

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from training.callbacks import (
    PLATEAU_DEFAULTS,
    TrainingDiverged,
    build_callbacks,
    fit_verbosity,
)
from training.schedules import build_learning_rate

BATCH = 100


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    y = keras.utils.to_categorical(y, 10).astype("float32")
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])  # 14 steps per epoch


def make_model(learning_rate=0.05, hidden=32, optimizer="sgd"):
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="output"),
        ]
    )
    opt = (
        keras.optimizers.SGD(learning_rate, momentum=0.9)
        if optimizer == "sgd"
        else keras.optimizers.Adam(learning_rate)
    )
    model.compile(
        opt,
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def fit(model, digits, callbacks, epochs):
    (x, y), validation = digits
    return model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        validation_data=validation,
        shuffle=False,
        callbacks=callbacks,
        verbose=0,
    )


def read_history(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


class LogsOverride(keras.callbacks.Callback):
    """Puts crafted per-epoch values into the logs, ahead of the callbacks under test."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class Preempted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """A crash or preemption at the start of epoch `epoch` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Preempted(f"preempted at the start of epoch {epoch}")


class PreemptAtEpochEnd(InterruptAt):
    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_begin(epoch)


class WeightsPerEpoch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def assert_same_weights(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


def test_default_list_and_order(tmp_path):
    callbacks = build_callbacks(
        tmp_path,
        tensorboard=True,
        plateau={"patience": 2},
        stop_at_perfect_train_accuracy=True,
        max_train_accuracy_drop=0.1,
    )
    assert [type(c).__name__ for c in callbacks] == [
        "ResumablePlateau",
        "LearningRateLogger",
        "StopOnDivergence",
        "StopAtPerfectAccuracy",
        "ResumableStopOnMetricDrop",
        "ResumableEarlyStopping",
        "ResumableCheckpoint",
        "HistoryCSV",
        "TensorBoard",
        "ThrottledBackup",
    ]
    plateau = callbacks[0]
    assert (plateau.factor, plateau.patience, plateau.min_lr) == (
        PLATEAU_DEFAULTS["factor"],
        2,
        PLATEAU_DEFAULTS["min_lr"],
    )
    minimal = build_callbacks(
        tmp_path, early_stopping_patience=None, checkpoint_best=False, backup=False, csv=False
    )
    assert [type(c).__name__ for c in minimal] == ["LearningRateLogger", "StopOnDivergence"]
    assert [type(c).__name__ for c in build_callbacks(tmp_path, early_stopping_patience=0)] == [
        "LearningRateLogger",
        "StopOnDivergence",
        "ResumableCheckpoint",
        "HistoryCSV",
        "ThrottledBackup",
    ]


def test_history_csv_logs_the_schedule_learning_rate_and_best_model_reloads(tmp_path, digits):
    schedule = build_learning_rate(
        "step", base_lr=0.1, epochs=4, steps_per_epoch=14, step_epochs=2, step_factor=0.5
    )
    model = make_model(schedule)
    history = fit(model, digits, build_callbacks(tmp_path, tensorboard=True), epochs=4)

    rows = read_history(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(history.history["val_loss"])
    seconds = [float(r["seconds"]) for r in rows]
    assert 0 < seconds[0] and seconds == sorted(seconds)  # wall-clock, growing epoch by epoch

    best = keras.saving.load_model(tmp_path / "best.keras")
    (_, _), (x_val, y_val) = digits
    val_losses = history.history["val_loss"]
    best_loss = best.evaluate(x_val, y_val, batch_size=BATCH, verbose=0, return_dict=True)["loss"]
    assert best_loss == pytest.approx(min(val_losses), rel=1e-5)
    assert val_losses[-1] < val_losses[0] / 2  # it really learned the digits
    assert list((tmp_path / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    # The fit finished: nothing is left to resume from.
    assert not (tmp_path / "backup").exists() and not (tmp_path / "callback_state").exists()


def test_float_learning_rate_is_logged_and_lowered_on_plateau(tmp_path, digits):
    model = make_model(0.05)
    # val_loss never improves after the first epoch: the rate halves every second epoch.
    override = LogsOverride("val_loss", [1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    callbacks = [override] + build_callbacks(
        tmp_path, early_stopping_patience=None, plateau={"factor": 0.5, "patience": 2}
    )
    fit(model, digits, callbacks, epochs=6)
    rates = [float(r["learning_rate"]) for r in read_history(tmp_path)]
    assert rates == pytest.approx([0.05, 0.05, 0.05, 0.025, 0.025, 0.0125])


def test_plateau_refuses_a_schedule_before_training(tmp_path, digits):
    schedule = build_learning_rate("cosine", base_lr=0.1, epochs=2, steps_per_epoch=14)
    model = make_model(schedule)
    before = model.get_weights()
    with pytest.raises(ValueError, match="Reduce-on-plateau needs a float learning rate"):
        fit(model, digits, build_callbacks(tmp_path, plateau={}), epochs=2)
    assert_same_weights(model.get_weights(), before)


def test_early_stopping_restores_the_best_weights(tmp_path, digits):
    model = make_model(0.05)
    recorder = WeightsPerEpoch()
    # Best "val_loss" at epoch 2 (index 1); patience 2 stops after epoch 4.
    override = LogsOverride("val_loss", [1.0, 0.5, 0.7, 0.8, 0.9, 0.3])
    callbacks = [override, recorder] + build_callbacks(
        tmp_path, early_stopping_patience=2, checkpoint_best=False
    )
    history = fit(model, digits, callbacks, epochs=6)
    assert len(history.history["loss"]) == 4
    assert_same_weights(model.get_weights(), recorder.weights[1])


def test_stops_at_perfect_training_accuracy(tmp_path, digits, capsys):
    model = make_model(0.02, hidden=128, optimizer="adam")
    callbacks = build_callbacks(
        tmp_path,
        stop_at_perfect_train_accuracy=True,
        early_stopping_patience=None,
        checkpoint_best=False,
    )
    (x, y), _ = digits
    history = model.fit(
        x, y, batch_size=BATCH, epochs=40, shuffle=False, callbacks=callbacks, verbose=0
    )
    accuracy = history.history["accuracy"]
    assert accuracy[-1] == 1.0 and max(accuracy[:-1]) < 1.0
    assert len(accuracy) < 40
    assert "training accuracy reached 100%" in capsys.readouterr().out


def test_stops_when_training_accuracy_drops(tmp_path, digits, capsys):
    model = make_model(0.05)
    override = LogsOverride("accuracy", [0.50, 0.80, 0.75, 0.69, 0.9, 0.9])
    callbacks = [override] + build_callbacks(
        tmp_path, max_train_accuracy_drop=0.1, early_stopping_patience=None
    )
    history = fit(model, digits, callbacks, epochs=6)
    assert len(history.history["loss"]) == 4  # 0.80 -> 0.69 is a drop of 0.11
    assert "fell from 0.8000 to 0.6900" in capsys.readouterr().out


def test_stops_when_val_accuracy_drops_and_keeps_its_best_across_a_resume(tmp_path, digits, capsys):
    # Interrupted before epoch index 3, the resumed fit must still know the best 0.80: it stops
    # at 0.69 (a fall of 0.11; 0.71 is only 0.09). Starting afresh from 0.71 it would not stop.
    values = [0.50, 0.80, 0.75, 0.71, 0.69, 0.9]
    _, history = run_interrupted_then_resumed(
        tmp_path / "resumed",
        digits,
        epochs=6,
        interrupt_at=3,
        callback_kwargs={"max_val_accuracy_drop": 0.1, "early_stopping_patience": None},
        extra=[LogsOverride("val_accuracy", values)],
    )
    assert history.epoch == [3, 4]
    assert "val_accuracy fell from 0.8000 to 0.6900" in capsys.readouterr().out
    # Both drop stops keep their own state.
    both = build_callbacks(tmp_path, max_train_accuracy_drop=0.2, max_val_accuracy_drop=0.1)
    assert [c.state_name for c in both if type(c).__name__ == "ResumableStopOnMetricDrop"] == [
        "accuracy_drop",
        "val_accuracy_drop",
    ]


def test_min_delta_is_the_least_improvement_early_stopping_counts(tmp_path, digits):
    # Each epoch improves val_loss by 0.02: without min_delta that resets the patience every
    # time; with min_delta 0.05 only the first value counts, and patience 2 stops at epoch 3.
    values = [1.0, 0.98, 0.96, 0.94]
    for min_delta, epochs in ((0.0, 4), (0.05, 3)):
        keras.backend.clear_session()
        callbacks = [LogsOverride("val_loss", values)] + build_callbacks(
            tmp_path / str(min_delta), early_stopping_patience=2, min_delta=min_delta
        )
        assert len(fit(make_model(0.05), digits, callbacks, epochs=4).epoch) == epochs


def test_drop_and_min_delta_flags_reach_the_fit_callbacks_and_bad_values_are_refused(tmp_path):
    from tests.training.test_config import parse
    from training.checks import ConfigError
    from training.trainer import build_fit_callbacks

    config = parse(["--max-val-drop", "0.1", "--min-delta", "0.01"])
    assert (config.callbacks.max_val_drop, config.callbacks.min_delta) == (0.1, 0.01)
    by_type = {type(c).__name__: c for c in build_fit_callbacks(config, tmp_path)}
    drop = by_type["ResumableStopOnMetricDrop"]
    assert (drop.monitor, drop.max_drop) == ("val_accuracy", 0.1)
    assert by_type["ResumableEarlyStopping"].min_delta == 0.01
    with pytest.raises(ConfigError, match=r"max_val_drop must be in \(0, 1\).*got 1.5"):
        config.replace({"callbacks": {"max_val_drop": 1.5}}).validate()
    with pytest.raises(ConfigError, match="min_delta must be >= 0.*got -0.1"):
        config.replace({"callbacks": {"min_delta": -0.1}}).validate()

    def write_intervals(config):  # best.keras's and the backup's
        callbacks = build_fit_callbacks(config, tmp_path)
        return [c.write_clock.interval for c in callbacks if hasattr(c, "write_clock")]

    interval = parse(["--checkpoint-interval", "2.5"])
    assert write_intervals(interval) == [2.5, 2.5]
    # Workers time their writes apart and could resume from different epochs: every epoch.
    assert write_intervals(interval.replace({"hardware": {"strategy": "multi_worker"}})) == [0, 0]
    with pytest.raises(ConfigError, match="checkpoint_interval must be >= 0.*got -1"):
        config.replace({"callbacks": {"checkpoint_interval": -1}}).validate()


def fit_expecting_divergence(tmp_path, model, x, y, message):
    with pytest.raises(TrainingDiverged, match=message):
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=2,
            shuffle=False,
            callbacks=build_callbacks(tmp_path, checkpoint_best=False),
            verbose=0,
        )
    assert not (tmp_path / "history.csv").exists()  # not one epoch completed


def test_a_nan_loss_stops_with_advice(tmp_path, digits):
    (x, y), _ = digits
    y = y.copy()
    y[150] = np.nan  # in the second batch of 100
    fit_expecting_divergence(
        tmp_path,
        make_model(0.05),
        x,
        y,
        r"^The loss became nan in epoch 1, batch 2, at learning rate 0.05: training diverged. "
        r"Lower the learning rate \(try 0.005\) or clip the gradients \(e.g. clip_norm=1.0\).$",
    )


def test_an_exploding_loss_stops_with_advice(tmp_path, digits):
    # Measured: at lr 1e6 the loss jumps from 2.35 to 3.9e9 in the second batch and then stays
    # finite (1e29) for good, which a NaN check alone never catches.
    (x, y), _ = digits
    fit_expecting_divergence(
        tmp_path,
        make_model(1e6),
        x,
        y,
        r"^The loss grew from 2.35\d* to 3.9\d*e\+09 in epoch 1, batch 2, at learning rate "
        r"1e\+06: training diverged. Lower the learning rate \(try 100000\)",
    )


def test_nan_weights_behind_a_finite_loss_stop_with_advice(tmp_path, digits):
    (x, y), _ = digits
    x = x.copy()
    x[150, 3] = np.nan
    fit_expecting_divergence(
        tmp_path,
        make_model(0.05),
        x,
        y,
        # Whether a NaN input reaches the loss depends on the CPU kernels (oneDNN's ReLU maps
        # NaN to 0 on some machines, passes it on elsewhere): either way the run stops in the
        # batch that read it, with advice.
        r"^The (weights became NaN or infinite|loss became nan) in epoch 1",
    )


def run_interrupted_then_resumed(run_dir, digits, epochs, interrupt_at, callback_kwargs, extra=()):
    """Fit until the interruption, then the same call again in a fresh Keras session."""
    model = make_model(0.05)
    with pytest.raises(Preempted):
        fit(
            model,
            digits,
            list(extra) + build_callbacks(run_dir, **callback_kwargs) + [InterruptAt(interrupt_at)],
            epochs=epochs,
        )
    assert len(read_history(run_dir)) == interrupt_at
    keras.backend.clear_session()
    model = make_model(0.05)  # a new process would start from freshly initialized weights
    history = fit(
        model, digits, list(extra) + build_callbacks(run_dir, **callback_kwargs), epochs=epochs
    )
    return model, history


@pytest.fixture(scope="module")
def uninterrupted(digits, tmp_path_factory):
    """Weights and losses of the 5-epoch fit that the resumed fits must reproduce exactly."""
    model = make_model(0.05)
    history = fit(model, digits, build_callbacks(tmp_path_factory.mktemp("reference")), epochs=5)
    return model.get_weights(), history.history["loss"]


@pytest.mark.slow
def test_resume_continues_from_the_last_completed_epoch(tmp_path, digits, uninterrupted):
    reference_weights, reference_losses = uninterrupted

    run_dir = tmp_path / "run"
    model, history = run_interrupted_then_resumed(
        run_dir, digits, epochs=5, interrupt_at=3, callback_kwargs={}
    )
    assert history.epoch == [3, 4]
    assert int(model.optimizer.iterations) == 5 * 14
    rows = read_history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [float(r["loss"]) for r in rows] == pytest.approx(reference_losses)
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds)  # the resumed epochs count on from the saved time
    assert_same_weights(model.get_weights(), reference_weights)
    assert not (run_dir / "backup").exists()


@pytest.mark.slow
def test_early_stopping_state_survives_a_resume(tmp_path, digits):
    # Best at epoch 2 (index 1); patience 2. Interrupted before epoch index 3, the resumed fit
    # must remember one epoch without improvement and the best weights, stop after index 3, and
    # restore the weights of index 1. Starting afresh it would run all 6 epochs.
    values = [1.0, 0.5, 0.7, 0.8, 0.9, 1.0]
    recorder = WeightsPerEpoch()
    reference = make_model(0.05)
    fit(reference, digits, [LogsOverride("val_loss", values), recorder], epochs=6)

    model, history = run_interrupted_then_resumed(
        tmp_path,
        digits,
        epochs=6,
        interrupt_at=3,
        callback_kwargs={"early_stopping_patience": 2},
        extra=[LogsOverride("val_loss", values)],
    )
    assert history.epoch == [3]
    assert [int(r["epoch"]) for r in read_history(tmp_path)] == [1, 2, 3, 4]
    assert_same_weights(model.get_weights(), recorder.weights[1])
    # best.keras is still the epoch-2 model: the resumed checkpoint remembered its best too.
    best = keras.saving.load_model(tmp_path / "best.keras")
    assert_same_weights(best.get_weights(), recorder.weights[1])


@pytest.mark.slow
def test_a_crash_between_the_history_and_the_backup_repeats_that_epoch_once(
    tmp_path, digits, uninterrupted
):
    reference_weights, reference_losses = uninterrupted

    run_dir = tmp_path / "run"
    model = make_model(0.05)
    callbacks = build_callbacks(run_dir)
    # Epoch 3's row and callback states are written, its backup is not.
    with pytest.raises(Preempted):
        fit(model, digits, callbacks[:-1] + [PreemptAtEpochEnd(2)] + callbacks[-1:], epochs=5)
    assert len(read_history(run_dir)) == 3
    keras.backend.clear_session()
    model = make_model(0.05)
    history = fit(model, digits, build_callbacks(run_dir), epochs=5)
    assert history.epoch == [2, 3, 4]
    rows = read_history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [float(r["loss"]) for r in rows] == pytest.approx(reference_losses)
    assert_same_weights(model.get_weights(), reference_weights)


def test_bad_arguments_say_what_is_allowed(tmp_path):
    with pytest.raises(
        ValueError, match="Unknown plateau key 'patiense'. Did you mean 'patience'\\? Valid: factor"
    ):
        build_callbacks(tmp_path, plateau={"patiense": 3})
    with pytest.raises(ValueError, match="plateau factor must be in \\(0, 1\\), got 1.5"):
        build_callbacks(tmp_path, plateau={"factor": 1.5})
    with pytest.raises(ValueError, match="plateau patience must be an integer >= 1"):
        build_callbacks(tmp_path, plateau={"patience": 0})
    with pytest.raises(ValueError, match="early_stopping_patience must be an integer >= 0"):
        build_callbacks(tmp_path, early_stopping_patience=-1)
    with pytest.raises(ValueError, match="max_train_accuracy_drop must be in \\(0, 1\\)"):
        build_callbacks(tmp_path, max_train_accuracy_drop=5)


class FakeTerminal:
    def isatty(self):
        return True


def test_fit_verbosity_is_a_bar_in_a_terminal_and_one_line_per_epoch_elsewhere(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    assert fit_verbosity() == 1
    monkeypatch.setenv("CI", "true")
    assert fit_verbosity() == 2
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys, "stdout", open(os.devnull, "w"))  # a pipe or a log file
    assert fit_verbosity() == 2


def ema_model():
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(),
    )
    return model


def test_ema_runs_validate_the_averaged_weights_and_end_with_them(tmp_path, digits):
    model = ema_model()
    callbacks = build_callbacks(
        tmp_path, early_stopping_patience=None, checkpoint_best=False, ema=True
    )
    history = fit(model, digits, callbacks, epochs=3)
    _, (x_val, y_val) = digits
    final = model.evaluate(x_val, y_val, batch_size=BATCH, verbose=0)
    assert final == pytest.approx(history.history["val_loss"][-1], rel=1e-5)


def test_early_stopping_does_not_put_raw_weights_back_over_the_averaged_ones(tmp_path, digits):
    model = ema_model()
    best_first = LogsOverride("val_loss", [0.1, 0.5, 0.6, 0.7])
    callbacks = [best_first] + build_callbacks(
        tmp_path, early_stopping_patience=2, checkpoint_best=False, ema=True
    )
    history = fit(model, digits, callbacks, epochs=4)
    assert len(history.epoch) == 3  # stopped two epochs after the best (the first)
    # The optimizer's averages (private in Keras 3.15; no public accessor) are the final weights.
    averages = model.optimizer._model_variables_moving_average
    for weight, average in zip(model.trainable_weights, averages):
        np.testing.assert_array_equal(weight.numpy(), average.numpy())


def test_the_config_decides_whether_best_keras_is_kept(tmp_path):
    from training.callbacks import ResumableCheckpoint
    from training.config import TrainConfig
    from training.trainer import build_fit_callbacks

    def checkpoints(config, **kwargs):
        return [
            c
            for c in build_fit_callbacks(config, tmp_path, **kwargs)
            if isinstance(c, ResumableCheckpoint)
        ]

    assert len(checkpoints(TrainConfig())) == 1
    off = TrainConfig().replace({"callbacks": {"checkpoint_best": False}})
    assert checkpoints(off) == []
    assert checkpoints(TrainConfig(), checkpoint_best=False) == []  # the tuner's override


class FakeClock:
    """Seconds that pass only when told: 1 per train batch, 100 per validation batch and 1000
    at each epoch end, so the throughput below is exact and leaves out validation."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class AdvanceClock(keras.callbacks.Callback):
    """Moves `clock` on by `train_batch`, `test_batch` and `epoch` seconds at each of those
    ends, ahead of the callbacks after it that read the clock."""

    def __init__(self, clock, *, train_batch=1.0, test_batch=100.0, epoch=1000.0):
        super().__init__()
        self.clock = clock
        self.seconds = {"train_batch": train_batch, "test_batch": test_batch, "epoch": epoch}

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += self.seconds["train_batch"]

    def on_test_batch_end(self, batch, logs=None):
        self.clock.now += self.seconds["test_batch"]

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += self.seconds["epoch"]


def test_train_throughput_counts_the_train_steps_of_epochs_after_the_first(digits):
    from training.callbacks import TrainThroughput

    clock = FakeClock()
    one_epoch = TrainThroughput(images_per_epoch=1400, clock=clock)
    fit(make_model(), digits, [AdvanceClock(clock), one_epoch], epochs=1)
    assert one_epoch.images_per_second is None  # the first epoch alone is never counted

    clock = FakeClock()
    three_epochs = TrainThroughput(images_per_epoch=1400, clock=clock)
    fit(make_model(), digits, [AdvanceClock(clock), three_epochs], epochs=3)
    # Epochs 2 and 3: 2 x 1400 images in 2 x 14 batches of 1 s each.
    assert three_epochs.images_per_second == 100.0


def test_metrics_json_has_the_steady_training_speed(tmp_path):
    import json

    from tests.training.test_train import quick_config
    from training.trainer import train

    result = train(quick_config(tmp_path, epochs=2))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["train_images_per_second"] == result.metrics["train_images_per_second"]
    assert metrics["train_images_per_second"] > 0
    assert metrics["images_per_second"] > 0


def one_second_epochs(clock):
    return AdvanceClock(clock, train_batch=0.0, test_batch=0.0, epoch=1.0)


class BestOnDisk(keras.callbacks.Callback):
    """best.keras's weights after each epoch end (None before it exists)."""

    def __init__(self, path):
        super().__init__()
        self.path, self.weights = path, []

    def on_epoch_end(self, epoch, logs=None):
        exists = self.path.exists()
        self.weights.append(keras.saving.load_model(self.path).get_weights() if exists else None)


@pytest.mark.parametrize("epochs", [6, 4])
def test_a_throttled_checkpoint_writes_the_best_epoch_once_due_and_at_the_end(
    tmp_path, digits, epochs
):
    # One second per epoch, writes at most every 2.5 s. New bests at epochs 0, 1 and 3: epoch 1's
    # waits in memory and is written at epoch 2's end (due), epoch 3's at epoch 5's end, or, in a
    # 4-epoch fit, when the fit ends.
    clock = FakeClock()
    values = [1.0, 0.5, 0.7, 0.4, 0.9, 1.0][:epochs]
    recorder, on_disk = WeightsPerEpoch(), BestOnDisk(tmp_path / "best.keras")
    model = make_model(0.05)
    callbacks = build_callbacks(
        tmp_path, early_stopping_patience=0, checkpoint_interval=2.5, clock=clock
    )
    extra = [one_second_epochs(clock), LogsOverride("val_loss", values), recorder]
    fit(model, digits, extra + callbacks + [on_disk], epochs=epochs)

    assert on_disk.weights[:2] == [None, None]
    for epoch in range(2, epochs):
        assert_same_weights(on_disk.weights[epoch], recorder.weights[1 if epoch < 5 else 3])
    best = keras.saving.load_model(tmp_path / "best.keras")
    assert_same_weights(best.get_weights(), recorder.weights[3])
    # Swapping a held best in to write it left the training weights as they were.
    assert_same_weights(model.get_weights(), recorder.weights[-1])


@pytest.mark.slow
def test_a_throttled_backup_resumes_from_its_last_write(tmp_path, digits, uninterrupted):
    # Backups at most every 2.5 s of one-second epochs: written after epoch index 2, not 3. Cut
    # before index 4, the fit resumes at index 3, repeating the epoch the callback states had
    # already counted, and ends where an uninterrupted fit ends.
    reference_weights, reference_losses = uninterrupted
    clock = FakeClock()
    run_dir = tmp_path / "run"
    model, history = run_interrupted_then_resumed(
        run_dir,
        digits,
        epochs=5,
        interrupt_at=4,
        callback_kwargs={"checkpoint_interval": 2.5, "clock": clock},
        extra=[one_second_epochs(clock)],
    )
    assert history.epoch == [3, 4]
    rows = read_history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [float(r["loss"]) for r in rows] == pytest.approx(reference_losses)
    assert_same_weights(model.get_weights(), reference_weights)

"""The callbacks `model.fit` runs with, and the fit verbosity for where the output goes.

Resume after a crash or preemption: `BackupAndRestore` in run_dir/backup restores the weights,
the optimizer state and the epoch count, but not the state of other callbacks. Every stateful
callback here (early stopping with its best weights, the best-model checkpoint, the accuracy-drop
stop, reduce-on-plateau) therefore saves its state into run_dir/callback_state at each epoch end,
before the backup is written, and reloads it when a fit starts past epoch 0. The history CSV keeps
the rows of the epochs already completed and appends the rest, so a resumed run has one row per
epoch.

Writing best.keras and the backup costs Keras 50-250 ms each (lenet5 to resnet20 on this
project's 2-core machine, mostly Python walking the model), as long as a small model's whole
epoch on a small dataset. With a `checkpoint_interval`, both are written at the end of an epoch
only once that many seconds have passed since the fit started or since their last write (a best
epoch that must wait keeps its weights in memory until then, and the fit's end writes it), so a
crash loses at most about that much training.
"""

import contextlib
import csv
import io
import json
import math
import os
import pathlib
import sys
import time

import keras
import numpy as np

from training import checks
from training.rundir import (
    BACKUP_DIR,
    HISTORY_CSV,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

PLATEAU_DEFAULTS = {"factor": 0.1, "patience": 5, "min_lr": 0.0}


def fit_verbosity():
    """1 (a progress bar) in a terminal; 2 (one line per epoch) in CI, logs and pipes."""
    return 1 if sys.stdout.isatty() and not os.environ.get("CI") else 2


def _current_learning_rate(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite, or the loss exploded."""


class StopOnDivergence(keras.callbacks.Callback):
    """Raises TrainingDiverged with what to change, at the first sign of divergence.

    A NaN/inf loss alone misses much of it (measured on digits): with a softmax output a too high
    learning rate sends the loss to 1e29 without overflowing, and ReLUs map NaN to 0, so NaN
    weights can leave the loss finite. Hence three checks: a non-finite loss and a loss grown
    LOSS_EXPLOSION_FACTOR-fold from the fit's first batch, or from 1 when that was lower, so that
    a noisy batch of a resumed, well-fitted run does not trip it (each batch); non-finite weights
    (each epoch). Raising, not a quiet stop, keeps a diverged run from being exported as a result,
    and leaves the backup of the last good epoch in place.
    """

    LOSS_EXPLOSION_FACTOR = 1e4

    def on_train_begin(self, logs=None):
        self._first_loss = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        where = f"in epoch {self._epoch + 1}, batch {batch + 1}"
        if not math.isfinite(loss):
            self._diverged(f"The loss became {loss} {where}")
        if self._first_loss is None:
            self._first_loss = loss
        elif loss > self.LOSS_EXPLOSION_FACTOR * max(self._first_loss, 1.0):
            self._diverged(f"The loss grew from {self._first_loss:.4g} to {loss:.4g} {where}")

    def on_epoch_end(self, epoch, logs=None):
        weights = self.model.trainable_weights
        if not all(bool(keras.ops.all(keras.ops.isfinite(w))) for w in weights):
            loss = logs.get("loss", float("nan"))
            self._diverged(
                f"The weights became NaN or infinite in epoch {epoch + 1} while the "
                f"loss stayed finite ({loss:.4g}; ReLUs turn NaN into 0): check the "
                "inputs for NaN too"
            )

    def _diverged(self, what):
        lr = _current_learning_rate(self.model.optimizer)
        raise TrainingDiverged(
            f"{what}, at learning rate {lr:g}: training diverged. Lower the learning rate "
            f"(try {lr / 10:g}) or clip the gradients (e.g. clip_norm=1.0)."
        )


class LearningRateLogger(keras.callbacks.Callback):
    """logs["learning_rate"]: the rate at the epoch's first step (a float or a schedule's value)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._learning_rate = _current_learning_rate(self.model.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = self._learning_rate


class TrainThroughput(keras.callbacks.Callback):
    """Steady-state training speed: images per second over the train batches of the epochs
    after a fit's first, from the epoch's start to its last train batch's end, so the first
    epoch's tracing and every validation pass are left out.

    `images_per_epoch`: the training images one epoch reads (fit logs no batch sizes).
    `images_per_second` is None until an epoch after the first has ended.
    """

    def __init__(self, images_per_epoch, clock=time.perf_counter):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.clock = clock
        self._images, self._seconds = 0, 0.0

    def on_train_begin(self, logs=None):
        self._first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch  # a resumed fit starts past 0, and traces again
        self._epoch_started = self._last_batch_end = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch_end = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        if epoch > self._first_epoch:
            self._images += self.images_per_epoch
            self._seconds += self._last_batch_end - self._epoch_started

    @property
    def images_per_second(self):
        return self._images / self._seconds if self._seconds > 0 else None


class StopAtPerfectAccuracy(keras.callbacks.Callback):
    """Stops when the training accuracy reaches 100%: nothing is left to learn from the data."""

    def on_epoch_end(self, epoch, logs=None):
        if logs.get("accuracy", 0.0) >= 1.0:
            print(f"Epoch {epoch + 1}: training accuracy reached 100%, stopping.")
            self.model.stop_training = True


class StopOnMetricDrop(keras.callbacks.Callback):
    """Stops when `monitor` (a higher-is-better metric such as accuracy or val_accuracy) falls
    more than max_drop below its best: the run has become unstable or started to overfit."""

    def __init__(self, monitor, max_drop):
        super().__init__()
        self.monitor = monitor
        self.max_drop = max_drop

    def on_train_begin(self, logs=None):
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = logs.get(self.monitor)
        if value is None:
            return
        if self.best is None or value > self.best:
            self.best = value
        elif self.best - value > self.max_drop:
            print(
                f"Epoch {epoch + 1}: {self.monitor} fell from {self.best:.4f} to "
                f"{value:.4f}, more than {self.max_drop}: stopping."
            )
            self.model.stop_training = True


class WriteClock:
    """When a checkpoint is due: `interval` seconds or more since `start()` or the last `wrote()`
    (0: at every epoch end)."""

    def __init__(self, interval, clock=time.monotonic):
        self.interval = interval
        self.clock = clock
        self._last = -math.inf

    def start(self):
        self._last = self.clock()

    def due(self):
        return self.clock() - self._last >= self.interval

    def wrote(self):
        self._last = self.clock()


class _Resumable:
    """Mixin: a callback's state survives an interrupted fit that BackupAndRestore resumes.

    Subclasses give their state as a JSON-able dict from `_state()` (which may also write files
    named `<state_name>.*`) and take it back in `_load_state(state)`.
    The state is written at each epoch end; callbacks run in list order, and BackupAndRestore comes
    last, so the state is never behind the backup. If a crash falls between the two, the resumed
    fit repeats an epoch this state already counted: that epoch is not counted twice.
    """

    state_name = None

    def __init__(self, *args, state_dir, **kwargs):
        super().__init__(*args, **kwargs)
        self.state_dir = pathlib.Path(state_dir)

    @property
    def _state_path(self):
        return self.state_dir / f"{self.state_name}.json"

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._first_epoch_pending = True
        self._epochs_counted = 0

    def on_epoch_begin(self, epoch, logs=None):
        # BackupAndRestore has moved the start epoch by now: past 0 means this fit resumes.
        if self._first_epoch_pending:
            self._first_epoch_pending = False
            if epoch > 0 and self._state_path.exists():
                state = json.loads(self._state_path.read_text())
                self._epochs_counted = state.pop("epochs_counted")
                self._load_state(state)
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self._epochs_counted:
            return
        super().on_epoch_end(epoch, logs)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {"epochs_counted": epoch + 1, **self._state()}
        write_json_atomic(self._state_path, state)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        # The fit is over (stopped or done): nothing left to resume.
        for path in self.state_dir.glob(f"{self.state_name}.*"):
            path.unlink()
        with contextlib.suppress(OSError):  # other callbacks may still have files there
            self.state_dir.rmdir()


class ResumableEarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters and best weights survive a resumed fit."""

    state_name = "early_stopping"

    @property
    def _weights_path(self):
        return self.state_dir / f"{self.state_name}.weights.npz"

    def _state(self):
        if self.best_weights is not None and self.best_epoch != self._saved_weights_epoch:
            buffer = io.BytesIO()
            np.savez(buffer, *self.best_weights)
            write_bytes_atomic(self._weights_path, buffer.getvalue())
            self._saved_weights_epoch = self.best_epoch
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch}

    def _load_state(self, state):
        self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
        if self._weights_path.exists():
            with np.load(self._weights_path) as arrays:
                self.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
            self._saved_weights_epoch = self.best_epoch

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._saved_weights_epoch = None


class ResumableCheckpoint(_Resumable, keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint(save_best_only) that keeps its best value across a resumed fit and writes
    no more often than `write_clock` allows (see the module docstring).
    `saved_model`, when given, is what it saves instead of the fitted model (a linear probe
    fits the head alone on cached features; best.keras is still the whole model)."""

    state_name = "checkpoint"

    def __init__(self, *args, saved_model=None, write_clock=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._saved_model = saved_model
        self.write_clock = write_clock or WriteClock(0)

    def set_model(self, model):
        super().set_model(model if self._saved_model is None else self._saved_model)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.write_clock.start()
        self._pending = None  # the weights of a best epoch not yet written
        self._written_best = self.best

    def _save_model(self, epoch, batch, logs):
        # Replaces ModelCheckpoint's private _save_model (keras is pinned): its own check still
        # decides whether this epoch is a new best (and updates self.best); when it is written
        # is ours to decide.
        if self._should_save_model(epoch, batch, logs, self.filepath):
            if self.write_clock.due():
                self._write()
            else:
                self._pending = self.model.get_weights()
        elif self._pending is not None and self.write_clock.due():
            self._write(self._pending)

    def _write(self, weights=None):
        """best.keras from the model as it is, or with `weights` swapped in for the write (the
        training weights go back even if the write fails)."""
        if weights is None:
            self.model.save(self.filepath, overwrite=True)
        else:
            current = self.model.get_weights()
            self.model.set_weights(weights)
            try:
                self.model.save(self.filepath, overwrite=True)
            finally:
                self.model.set_weights(current)
        self._pending, self._written_best = None, self.best
        self.write_clock.wrote()

    def on_train_end(self, logs=None):
        if self._pending is not None:
            self._write(self._pending)
        super().on_train_end(logs)

    def _state(self):
        # What best.keras holds: a resumed fit has lost a pending best, and must beat the last
        # written one to write again.
        return {"best": self._written_best}

    def _load_state(self, state):
        self.best = self._written_best = state["best"]


class ThrottledBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that writes at an epoch's end only when `write_clock` allows. The
    callback states run every epoch, so they may be epochs ahead of the backup: a resumed fit
    repeats those epochs without counting them again (_Resumable)."""

    def __init__(self, *args, write_clock=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.write_clock = write_clock or WriteClock(0)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.write_clock.start()

    def on_epoch_end(self, epoch, logs=None):
        if self.write_clock.due():
            super().on_epoch_end(epoch, logs)
            self.write_clock.wrote()


class ResumablePlateau(_Resumable, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau that refuses a schedule up front and keeps its counters across a resume.

    The reduced learning rate itself is an optimizer variable, which the backup restores.
    """

    state_name = "plateau"

    def on_train_begin(self, logs=None):
        # Keras itself only notices when it first tries to lower the rate, maybe epochs in.
        # LossScaleOptimizer (mixed_float16) wraps the optimizer that owns the learning rate.
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(
                "Reduce-on-plateau needs a float learning rate, but the optimizer holds the "
                f"schedule {type(optimizer._learning_rate).__name__}: use the 'plateau' (or "
                "'constant') schedule with plateau=..., or another schedule without it."
            )
        super().on_train_begin(logs)

    def _state(self):
        return {"wait": self.wait, "best": self.best, "cooldown_counter": self.cooldown_counter}

    def _load_state(self, state):
        self.wait, self.best = state["wait"], state["best"]
        self.cooldown_counter = state["cooldown_counter"]


class ResumableStopOnMetricDrop(_Resumable, StopOnMetricDrop):
    """StopOnMetricDrop that keeps its best value across a resumed fit."""

    @property
    def state_name(self):  # one state file per watched metric
        return f"{self.monitor}_drop"

    def _state(self):
        return {"best": self.best}

    def _load_state(self, state):
        self.best = state["best"]


class HistoryCSV(keras.callbacks.Callback):
    """history.csv with one row per completed epoch (1-based `epoch`), rewritten whole each epoch.

    `seconds` is the wall-clock training time at the end of the epoch, validation included and
    counted on across resumes, so a curve can be read against time (benchmarks.time_to_accuracy).
    A resumed fit keeps the rows of the epochs before its start epoch and drops any later ones (an
    epoch that finished after the last backup runs again), so no epoch appears twice.
    """

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)

    def on_train_begin(self, logs=None):
        self._rows = None
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        if self._rows is None:
            self._rows = [row for row in self._read() if int(row["epoch"]) <= epoch]
            if self._rows:  # a resumed fit counts on from the last kept epoch's time
                self._started -= float(self._rows[-1].get("seconds") or 0.0)

    def on_epoch_end(self, epoch, logs=None):
        seconds = round(time.perf_counter() - self._started, 3)
        self._rows.append({"epoch": epoch + 1, **logs, "seconds": seconds})
        columns = ["epoch"] + sorted({key for row in self._rows for key in row} - {"epoch"})

        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self._rows)
        write_text_atomic(self.path, text.getvalue())

    def _read(self):
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def check_plateau(
    factor, patience, min_lr, *, names=("plateau factor", "plateau patience", "plateau min_lr")
):
    """The rules of the reduce-on-plateau settings; `names` as the caller knows them."""
    checks.in_range(names[0], factor, 0, 1, low_open=True)
    checks.in_range(names[1], patience, 1, integer=True)
    checks.in_range(names[2], min_lr, 0)


def check_stops(
    early_stopping_patience,
    max_train_accuracy_drop,
    *,
    names=("early_stopping_patience", "max_train_accuracy_drop"),
):
    """The rules of the early-stopping settings (patience 0 or None: off)."""
    if early_stopping_patience is not None:
        checks.in_range(names[0], early_stopping_patience, 0, integer=True)
    if max_train_accuracy_drop is not None:
        checks.in_range(names[1], max_train_accuracy_drop, 0, 1, low_open=True)


def build_callbacks(
    run_dir,
    *,
    early_stopping_patience=10,
    monitor="val_loss",
    stop_at_perfect_train_accuracy=False,
    max_train_accuracy_drop=None,
    max_val_accuracy_drop=None,
    min_delta=0.0,
    checkpoint_best=True,
    tensorboard=False,
    plateau=None,
    backup=True,
    csv=True,
    ema=False,
    saved_model=None,
    checkpoint_interval=0.0,
    clock=time.monotonic,
):
    """The callbacks for `model.fit`, in the order they must run.

    Writes into run_dir: best.keras (the best model by `monitor`), history.csv (with the
    learning_rate column), tensorboard/, backup/ and callback_state/ (both gone when fit ends).
    `plateau` is None or a dict with any of factor, patience, min_lr (defaults in
    PLATEAU_DEFAULTS); it needs a float learning rate. With `ema` (the optimizer keeps an
    average of the weights) validation measures the averaged weights and the fit ends with them:
    early stopping still stops, but does not restore an earlier epoch's raw weights over them.
    `backup` needs a built model; `saved_model` is what best.keras holds when it is not the
    fitted model. Training accuracy is logs["accuracy"]; `max_val_accuracy_drop`
    watches logs["val_accuracy"]; `min_delta` is the least change of `monitor` that early
    stopping counts as an improvement. A diverging fit raises TrainingDiverged
    (StopOnDivergence). best.keras and the backup are written at most every
    `checkpoint_interval` seconds of `clock` (0: every epoch, as Keras does).
    """
    check_stops(early_stopping_patience, max_train_accuracy_drop)
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_dir = run_dir / "callback_state"

    callbacks = []
    if ema:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if plateau is not None:
        for key in plateau:
            checks.one_of("plateau key", key, PLATEAU_DEFAULTS)
        settings = {**PLATEAU_DEFAULTS, **plateau}
        check_plateau(**settings)
        callbacks.append(
            ResumablePlateau(monitor=monitor, verbose=1, state_dir=state_dir, **settings)
        )
    # Before every callback that records the logs (the CSV, TensorBoard, fit's History).
    callbacks += [LearningRateLogger(), StopOnDivergence()]
    if stop_at_perfect_train_accuracy:
        callbacks.append(StopAtPerfectAccuracy())
    for watched, max_drop in (
        ("accuracy", max_train_accuracy_drop),
        ("val_accuracy", max_val_accuracy_drop),
    ):
        if max_drop is not None:
            callbacks.append(ResumableStopOnMetricDrop(watched, max_drop, state_dir=state_dir))
    if early_stopping_patience:
        callbacks.append(
            ResumableEarlyStopping(
                monitor=monitor,
                patience=early_stopping_patience,
                min_delta=min_delta,
                restore_best_weights=not ema,
                verbose=1,
                state_dir=state_dir,
            )
        )
    if checkpoint_best:
        callbacks.append(
            ResumableCheckpoint(
                str(run_dir / "best.keras"),
                monitor=monitor,
                save_best_only=True,
                state_dir=state_dir,
                saved_model=saved_model,
                write_clock=WriteClock(checkpoint_interval, clock),
            )
        )
    if csv:
        callbacks.append(HistoryCSV(run_dir / HISTORY_CSV))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    if backup:
        # Last: every state above is written before the backup of the same epoch. Two copies:
        # a process killed while writing one still leaves the other to resume from.
        callbacks.append(
            ThrottledBackup(
                str(run_dir / BACKUP_DIR),
                double_checkpoint=True,
                write_clock=WriteClock(checkpoint_interval, clock),
            )
        )
    return callbacks


def check_config(config):
    check_stops(
        config.callbacks.early_stopping_patience,
        config.callbacks.max_accuracy_drop,
        names=("callbacks.early_stopping_patience", "callbacks.max_accuracy_drop"),
    )
    schedule = config.schedule
    check_plateau(
        schedule.plateau_factor,
        schedule.plateau_patience,
        schedule.min_lr,
        names=("schedule.plateau_factor", "schedule.plateau_patience", "schedule.min_lr"),
    )
    settings = config.callbacks
    if settings.max_val_drop is not None:
        checks.in_range("callbacks.max_val_drop", settings.max_val_drop, 0, 1, low_open=True)
    checks.in_range("callbacks.min_delta", settings.min_delta, 0)
    checks.in_range("callbacks.checkpoint_interval", settings.checkpoint_interval, 0)

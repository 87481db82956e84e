"""The training curves of a run: loss, accuracy and learning rate per epoch, as one PNG.

    plot_curves("saved_models/lenet5-digits/history.csv", "saved_models/lenet5-digits/curves.png")

Drawn on a bare matplotlib Figure (Agg rendering, no pyplot), so it needs no display and leaves
no global state behind.
"""

import csv
import io
import math
import pathlib

from matplotlib.figure import Figure

from training.rundir import write_bytes_atomic

TRAIN_COLOR = "#1f77b4"
VALIDATION_COLOR = "#d62728"
LR_COLOR = "#2ca02c"
LEARNING_RATE_KEYS = ("learning_rate", "lr")


def plot_curves(history, path, *, title=None):
    """Plot `history` (a dict of per-epoch lists, or the path of a history.csv) to `path`.

    Reads the Keras log keys `loss`, `accuracy`, `learning_rate` (or `lr`) and their `val_`
    twins where present; an `epoch` column (1-based, as the trainer's history.csv holds it) sets
    the x axis.
    Returns the matplotlib Figure, for a caller that wants to show or inspect it.
    """
    if isinstance(history, (str, pathlib.Path)):
        history = read_history_csv(history)
    history = _check_history(history)
    epochs = (
        [int(epoch) for epoch in history["epoch"]]
        if "epoch" in history
        else (list(range(1, _length(history) + 1)))
    )

    figure = Figure(figsize=(15, 4.6), dpi=100, layout="constrained")
    loss_axes, accuracy_axes, lr_axes = figure.subplots(1, 3)
    best_epoch = _plot_pair(loss_axes, epochs, history, "loss", "Loss", mark_best=True)
    _plot_pair(accuracy_axes, epochs, history, "accuracy", "Accuracy")
    _plot_learning_rate(lr_axes, epochs, history)
    if best_epoch is not None:
        for axes in (loss_axes, accuracy_axes, lr_axes):
            axes.axvline(best_epoch, color=VALIDATION_COLOR, linestyle=":", linewidth=1, alpha=0.6)
    for axes in (loss_axes, accuracy_axes, lr_axes):
        axes.set_xlabel("epoch")
        axes.grid(True, alpha=0.3)
        axes.margins(y=0.08)
        # Whole epochs only; a single epoch gets a little room on either side.
        axes.xaxis.get_major_locator().set_params(integer=True)
        if len(epochs) == 1:
            axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
    if title:
        figure.suptitle(title, fontsize=14, fontweight="bold")

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return figure


def read_history_csv(path):
    """A history.csv file as a dict of float lists; empty cells become NaN."""
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"history file {str(path)!r} has no epochs")
    return {
        key: [float(row[key]) if row[key] not in ("", None) else math.nan for row in rows]
        for key in rows[0]
    }


def _check_history(history):
    if not isinstance(history, dict):
        raise ValueError(
            f"history must be a dict of per-epoch lists or a CSV path, got {type(history).__name__}"
        )
    lengths = {key: len(values) for key, values in history.items()}
    if not lengths or max(lengths.values()) == 0:
        raise ValueError("history has no epochs to plot")
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"history columns must all have one value per epoch, got lengths {lengths}"
        )
    if "loss" not in history:
        raise ValueError(f"history must have a 'loss' column, got {sorted(history)}")
    return {key: [float(value) for value in values] for key, values in history.items()}


def _length(history):
    return len(next(iter(history.values())))


def _plot_pair(axes, epochs, history, key, label, *, mark_best=False):
    """Train and validation curves of one metric; returns the best validation epoch if marked."""
    marker = "o" if len(epochs) <= 30 else None
    axes.set_title(label)
    axes.set_ylabel(label.lower())
    if key not in history and f"val_{key}" not in history:
        _say_not_logged(axes, label.lower())
        return None
    if key in history:
        axes.plot(
            epochs, history[key], color=TRAIN_COLOR, marker=marker, markersize=4, label="train"
        )
    best_epoch = None
    validation = history.get(f"val_{key}")
    if validation is not None:
        axes.plot(
            epochs,
            validation,
            color=VALIDATION_COLOR,
            marker=marker,
            markersize=4,
            label="validation",
        )
        finite = [
            (value, epoch) for epoch, value in zip(epochs, validation) if math.isfinite(value)
        ]
        if mark_best and finite:
            best_value, best_epoch = min(finite)
            axes.plot(
                best_epoch,
                best_value,
                marker="*",
                markersize=16,
                color=VALIDATION_COLOR,
                markeredgecolor="black",
                linestyle="none",
                label=f"best: epoch {best_epoch}, {best_value:.4g}",
            )
    axes.legend(loc="best", framealpha=0.9)
    return best_epoch


def _plot_learning_rate(axes, epochs, history):
    axes.set_title("Learning rate")
    axes.set_ylabel("learning rate")
    key = next((key for key in LEARNING_RATE_KEYS if key in history), None)
    if key is None:
        _say_not_logged(axes, "learning rate")
        return
    rates = history[key]
    axes.plot(
        epochs,
        rates,
        color=LR_COLOR,
        marker="o" if len(epochs) <= 30 else None,
        markersize=4,
        label="learning rate",
    )
    positive = [rate for rate in rates if math.isfinite(rate) and rate > 0]
    # A schedule that spans decades (exponential, step, warmup from near zero) reads only on a
    # log axis.
    if positive and len(positive) == len(rates) and max(positive) >= 10 * min(positive):
        axes.set_yscale("log")
    else:
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def _say_not_logged(axes, what):
    axes.text(
        0.5,
        0.5,
        f"no {what} logged",
        transform=axes.transAxes,
        ha="center",
        va="center",
        color="gray",
    )

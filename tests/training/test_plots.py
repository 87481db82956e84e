import math

import matplotlib.image
import numpy as np
import pytest

from training.plots import plot_curves, read_history_csv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Five epochs as the trainer's history.csv holds them (1-based), validation loss best at the third.
HISTORY_CSV = """epoch,accuracy,learning_rate,loss,val_accuracy,val_loss
1,0.52,0.1,1.9,0.61,1.5
2,0.80,0.01,0.8,0.82,0.7
3,0.91,0.001,0.4,0.90,0.45
4,0.95,0.0001,0.2,0.91,0.5
5,0.97,1e-05,0.1,0.90,
"""


def read_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (460, 1500)
    # Something was drawn: not a blank canvas.
    assert pixels[..., :3].std() > 0.05
    return pixels


def legend_texts(axes):
    legend = axes.get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend else []


def test_read_history_csv_gives_floats_and_nan_for_empty_cells(tmp_path):
    (tmp_path / "history.csv").write_text(HISTORY_CSV)
    history = read_history_csv(tmp_path / "history.csv")
    assert history["epoch"] == [1, 2, 3, 4, 5]
    assert history["learning_rate"] == [0.1, 0.01, 0.001, 0.0001, 1e-05]
    assert history["val_loss"][:4] == [1.5, 0.7, 0.45, 0.5] and math.isnan(history["val_loss"][4])


def test_curves_from_a_history_csv(tmp_path):
    (tmp_path / "history.csv").write_text(HISTORY_CSV)
    figure = plot_curves(tmp_path / "history.csv", tmp_path / "curves.png", title="lenet5-digits")

    read_png(tmp_path / "curves.png")
    loss_axes, accuracy_axes, lr_axes = figure.axes
    assert figure.get_suptitle() == "lenet5-digits"
    assert [axes.get_title() for axes in figure.axes] == ["Loss", "Accuracy", "Learning rate"]
    assert [axes.get_xlabel() for axes in figure.axes] == ["epoch"] * 3
    # The NaN of the last epoch is skipped.
    assert legend_texts(loss_axes) == ["train", "validation", "best: epoch 3, 0.45"]
    assert legend_texts(accuracy_axes) == ["train", "validation"]
    np.testing.assert_array_equal(loss_axes.lines[0].get_xdata(), [1, 2, 3, 4, 5])
    # Four decades of learning rate: a log axis.
    assert lr_axes.get_yscale() == "log"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "history.csv"]


def test_curves_without_validation_or_learning_rate(tmp_path):
    history = {"loss": [2.0, 1.0, 0.5], "accuracy": [0.3, 0.6, 0.8]}
    figure = plot_curves(history, tmp_path / "curves.png")

    read_png(tmp_path / "curves.png")
    loss_axes, accuracy_axes, lr_axes = figure.axes
    assert legend_texts(loss_axes) == ["train"] and legend_texts(accuracy_axes) == ["train"]
    assert [text.get_text() for text in lr_axes.texts] == ["no learning rate logged"]
    assert figure.get_suptitle() == ""


def test_constant_learning_rate_stays_linear_and_single_epoch_works(tmp_path):
    history = {
        "epoch": [1],
        "loss": [0.9],
        "accuracy": [0.7],
        "val_loss": [1.1],
        "val_accuracy": [0.6],
        "lr": [0.001],
    }
    figure = plot_curves(history, tmp_path / "curves.png", title="one epoch")

    read_png(tmp_path / "curves.png")
    loss_axes, _, lr_axes = figure.axes
    assert legend_texts(loss_axes) == ["train", "validation", "best: epoch 1, 1.1"]
    assert lr_axes.get_yscale() == "linear"
    assert loss_axes.get_xlim() == (0.0, 2.0)


def test_existing_png_is_replaced(tmp_path):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")
    plot_curves({"loss": [1.0, 0.5]}, target)
    read_png(target)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


@pytest.mark.parametrize(
    "history, message",
    [
        ({}, "no epochs"),
        ({"loss": []}, "no epochs"),
        (
            {"loss": [1.0, 0.5], "accuracy": [0.5]},
            r"one value per epoch, got lengths \{'loss': 2, 'accuracy': 1\}",
        ),
        ({"accuracy": [0.5]}, r"must have a 'loss' column, got \['accuracy'\]"),
        ([1.0, 0.5], "got list"),
    ],
)
def test_bad_history_is_refused(tmp_path, history, message):
    with pytest.raises(ValueError, match=message):
        plot_curves(history, tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []


def test_history_csv_without_rows_is_refused(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss\n")
    with pytest.raises(ValueError, match="has no epochs"):
        plot_curves(tmp_path / "history.csv", tmp_path / "curves.png")

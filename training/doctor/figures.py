"""The doctor's pictures as PNG bytes: augmented.png, lr_range.png, activations.png.

Drawn on bare matplotlib Figures (Agg rendering, no pyplot), as training/plots.py does.
"""

import io
import math

import numpy as np
from matplotlib.figure import Figure

INIT_COLOR = "#1f77b4"
TRAINED_COLOR = "#d62728"
MAX_HISTOGRAMS = 12


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def image_grid(images, labels, class_names, *, title, columns=8) -> bytes:
    """Images with their labels under them. `labels` are label rows or class indices; a row
    that mixes classes (mixup, cutmix, smoothing) shows its two largest shares."""
    count = len(images)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(columns * 1.1, rows * 1.25 + 0.4), dpi=80, layout="constrained")
    figure.suptitle(title, fontsize=11)
    for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
        axes.set_axis_off()
        if index >= count:
            continue
        image = np.asarray(images[index], np.float64)
        # Any value range shows: each image stretched to its own min..max.
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
        if image.shape[-1] == 1:
            axes.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            axes.imshow(image, interpolation="nearest")
        axes.set_title(_label_text(labels[index], class_names), fontsize=8)
    return _png(figure)


def _label_text(label, class_names):
    label = np.asarray(label)
    if label.ndim == 0:
        return class_names[int(label)] if 0 <= int(label) < len(class_names) else str(label)
    top = np.argsort(label)[::-1][:2]
    if label[top[1]] < 0.2:  # one class dominates: a plain or smoothed label
        return class_names[top[0]]
    return " / ".join(f"{class_names[k]} {label[k]:.0%}" for k in top)


def lr_range_plot(
    rates, losses, smoothed, *, steepest, at_minimum, safe, configured, title
) -> bytes:
    figure = Figure(figsize=(7.5, 4.5), dpi=80, layout="constrained")
    axes = figure.subplots()
    axes.plot(rates, losses, color="#bbbbbb", linewidth=0.8, label="loss per step")
    axes.plot(rates, smoothed, color=INIT_COLOR, linewidth=2, label="smoothed loss")
    for rate, color, text in (
        (steepest, "#2ca02c", "steepest descent"),
        (at_minimum, "#7f7f7f", "loss minimum"),
        (safe, "#ff7f0e", "suggested (safe)"),
        (configured, TRAINED_COLOR, "configured"),
    ):
        if rate:
            axes.axvline(rate, color=color, linestyle="--", label=f"{text}: {rate:.2g}")
    axes.set_xscale("log")
    finite = [value for value in smoothed if math.isfinite(value)]
    if finite:  # the divergence at the end would squash the interesting part
        axes.set_ylim(min(finite) * 0.9, min(max(finite), 2.5 * finite[0]) * 1.05)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


def activations_plot(at_init, after, gradients_init, gradients_after, *, steps, title) -> bytes:
    """Per-layer activation histograms (at init and after `steps` steps) above the RMS
    gradient per weighted layer, as in Glorot & Bengio's (2010) figures."""
    names = list(at_init)
    if len(names) > MAX_HISTOGRAMS:  # evenly spaced, first and last included
        names = [names[i] for i in np.linspace(0, len(names) - 1, MAX_HISTOGRAMS).astype(int)]
    columns = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / columns) if names else 0
    figure = Figure(figsize=(3.2 * columns + 0.5, 2.3 * rows + 3.2), dpi=80, layout="constrained")
    figure.suptitle(title, fontsize=12)
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1] * rows + [1.3])
    for index, name in enumerate(names):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        for values, color, when in (
            (at_init[name], INIT_COLOR, "init"),
            (after.get(name), TRAINED_COLOR, f"after {steps} steps"),
        ):
            if values is None:
                continue
            values = values[np.isfinite(values)]
            axes.hist(
                values,
                bins=50,
                color=color,
                alpha=0.55,
                density=True,
                label=f"{when}: std {values.std():.2g}" if values.size else when,
            )
        axes.set_title(name, fontsize=9)
        axes.tick_params(labelsize=7)
        axes.legend(fontsize=6.5, loc="upper right")
    axes = figure.add_subplot(grid[rows, :])
    layers = list(gradients_init)
    positions = np.arange(len(layers))
    for values, color, when in (
        (gradients_init, INIT_COLOR, "init"),
        (gradients_after, TRAINED_COLOR, f"after {steps} steps"),
    ):
        if values:
            heights = [max(values[name], 1e-30) for name in layers]
            axes.semilogy(positions, heights, marker="o", color=color, label=when)
    axes.set_xticks(positions, layers, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel("RMS gradient")
    axes.set_title("gradient per weighted layer (input side on the left)", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)

"""The `data` check: what the model is fed, before any training."""

import hashlib

import numpy as np

from training.doctor import figures
from training.doctor.report import Result
from training.doctor.session import (
    labels_to_classes,
    layer_inputs_and_outputs,
    weighted_layers,
)

# Glorot, He and LeCun initializations assume inputs of mean 0 and variance 1. Within half a
# standard deviation of 0 and a factor of 2 of unit spread, the first layer's pre-activations
# stay within a factor of 2 of the scale its initializer was derived for; raw 0..255 pixels
# (mean ~100, std ~80) are far outside, and so are 0..1 pixels of sparse images (std ~0.3).
MAX_ABS_MEAN = 0.5
STD_RANGE = (0.5, 2.0)
# Rarest class under half the most common one: accuracy starts to hide the rare classes.
MIN_CLASS_RATIO = 0.5
# A few coincidental copies (blank-ish images) are harmless; beyond 1% the held-out accuracy
# is inflated by that much memorization.
MAX_DUPLICATE_SHARE = 0.01
GRID_IMAGES = 32


def _hashes(images):
    return [
        hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
        for image in images
    ]


def check_data(exam):
    results, counts, train_hashes = [], np.zeros(exam.num_classes, np.int64), set()
    bad_labels = []
    for images, labels in exam.examples(exam.train, exam.budget.scan_examples):
        bad_labels += _label_problems(labels, exam.num_classes)
        classes = labels_to_classes(labels)
        inside = (classes >= 0) & (classes < exam.num_classes)
        counts += np.bincount(classes[inside], minlength=exam.num_classes)[: exam.num_classes]
        train_hashes.update(_hashes(images))
    results.append(_labels_result(bad_labels, exam.num_classes))
    results.append(_balance_result(counts, exam.class_names))
    results.append(_input_result(exam))
    results.append(_duplicates_result(exam, train_hashes))

    images, labels = exam.batches(exam.augmented, 1)
    exam.report.images["augmented.png"] = figures.image_grid(
        images[:GRID_IMAGES],
        labels[:GRID_IMAGES],
        exam.class_names,
        title="a training batch as training sees it (augmented where augmentation is on)",
    )
    return results


def _label_problems(labels, num_classes):
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            return [f"label rows have {labels.shape[1]} entries for {num_classes} classes"]
        sums = labels.sum(axis=1)
        if np.any(np.abs(sums - 1) > 1e-3) or np.any(labels < 0):
            return [
                f"label rows are no class distributions (sums {sums.min():.3g}..{sums.max():.3g})"
            ]
        return []
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        return [f"labels span {labels.min()}..{labels.max()}"]
    return []


def _labels_result(problems, num_classes):
    if problems:
        return Result(
            "data",
            "label range",
            problems[0],
            f"classes 0..{num_classes - 1}",
            "fail",
            "the labels do not match the model's outputs: check the label encoding and num_classes",
        )
    return Result(
        "data",
        "label range",
        f"all within 0..{num_classes - 1}",
        f"classes 0..{num_classes - 1}",
        "pass",
    )


def _balance_result(counts, class_names):
    rarest, commonest = int(counts.argmin()), int(counts.argmax())
    ratio = counts[rarest] / max(counts[commonest], 1)
    measured = (
        f"{counts.sum()} images; rarest {class_names[rarest]} {counts[rarest]}, "
        f"most {class_names[commonest]} {counts[commonest]}"
    )
    expected = f"rarest >= {MIN_CLASS_RATIO:.0%} of most common"
    if ratio >= MIN_CLASS_RATIO:
        return Result("data", "class balance", measured, expected, "pass")
    return Result(
        "data",
        "class balance",
        measured,
        expected,
        "warn",
        "imbalanced classes: watch per-class accuracy, consider class weights or "
        "resampling"
        + (f"; class {class_names[rarest]} has no images" if counts[rarest] == 0 else ""),
    )


def _input_result(exam):
    """Per-channel statistics of what the first trainable layer receives."""
    images, _ = exam.batches(exam.train, exam.budget.loss_batches)
    model = exam.copy(compiled=False)
    first = weighted_layers(model)[0]
    received = layer_inputs_and_outputs(model, images, {first})[first][0].astype(np.float64)
    pixels = (
        received.reshape(-1, received.shape[-1])
        if received.ndim == 4
        else (received.reshape(-1, 1))
    )
    means, stds = pixels.mean(axis=0), pixels.std(axis=0)
    measured = (
        "mean "
        + ",".join(f"{m:.2f}" for m in means)
        + " std "
        + ",".join(f"{s:.2f}" for s in stds)
        + f" (into {first.name})"
    )
    expected = f"|mean| <= {MAX_ABS_MEAN}, std {STD_RANGE[0]}..{STD_RANGE[1]}"
    if np.all(np.abs(means) <= MAX_ABS_MEAN) and np.all(
        (stds >= STD_RANGE[0]) & (stds <= STD_RANGE[1])
    ):
        return Result("data", "input scale", measured, expected, "pass")
    return Result(
        "data",
        "input scale",
        measured,
        expected,
        "warn",
        "inputs are not standardized: put a keras.layers.Normalization (adapted to "
        "the training images) in front of the model",
    )


def _duplicates_result(exam, train_hashes):
    held_out = [
        (name, data)
        for name, data in (("validation", exam.validation), ("test", exam.test))
        if data is not None
    ]
    if not held_out:
        return Result(
            "data",
            "train/test duplicates",
            "no held-out data given",
            "held-out images not in train",
            "warn",
            "pass validation_data (and test_data) to check for leaks",
        )
    copies = total = 0
    for _, data in held_out:
        for images, _ in exam.examples(data, exam.budget.scan_examples):
            copies += sum(digest in train_hashes for digest in _hashes(images))
            total += len(images)
    share = copies / max(total, 1)
    measured = f"{copies} of {total} held-out images are in train ({share:.2%})"
    expected = f"<= {MAX_DUPLICATE_SHARE:.0%}"
    verdict = "warn" if share > MAX_DUPLICATE_SHARE else "pass"
    return Result(
        "data",
        "train/test duplicates",
        measured,
        expected,
        verdict,
        ""
        if verdict == "pass"
        else "held-out images also in training: remove them, or the held-out accuracy "
        "overstates what the model does on new images",
    )

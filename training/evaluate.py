"""`python -m training.evaluate RUN_DIR [--dataset ...]`: how good a trained model is, and how fast.

On the run's own test split (the trainer's split, rebuilt from its config.yaml), or on the test
split of any dataset the trainer reads (`--dataset`), through the exported SavedModel's
`serving_float` signature: loss, top-1, top-5, per-class precision/recall/F1, the confusion
matrix, and the SavedModel's throughput at batch 1, 32 and 256. Writes RUN_DIR/evaluation/
metrics.json, confusion_matrix.png and errors.png (the worst-misclassified images), and prints
a table.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import io
import math
import pathlib
import sys
import time

import numpy as np

EVALUATION_DIR = "evaluation"
THROUGHPUT_BATCHES = (1, 32, 256)
ERROR_IMAGES = 16
TOP_K = 5


def evaluate_run(
    run_dir,
    *,
    dataset=None,
    version=None,
    throughput_batches=THROUGHPUT_BATCHES,
    throughput_seconds=1.0,
):
    """Evaluate a run's SavedModel, write RUN_DIR/evaluation/, return the metrics dict."""
    import tensorflow as tf

    from training import export, rundir, serving, trainer

    run_dir = pathlib.Path(run_dir)
    loaded, class_names = serving.load(run_dir, version)
    config = export.load_run_config(run_dir)
    if dataset is not None:
        config = config.replace({"data": {"dataset": str(dataset)}})
    signature = loaded.signatures["serving_float"]
    input_shape = tuple(signature.structured_input_signature[1]["image"].shape[1:])

    prepared = trainer.prepare_data(config)
    if list(prepared.class_names) != class_names:
        raise ValueError(
            f"dataset {config.data.dataset!r} has the classes {prepared.class_names}, the model "
            f"{class_names}: evaluate on a dataset with the model's classes, in the same order"
        )
    if tuple(prepared.input_shape) != input_shape:
        raise ValueError(
            f"dataset {config.data.dataset!r} gives images of shape {prepared.input_shape}, the "
            f"model takes {input_shape}: give a dataset with {input_shape[-1]}-channel images"
        )

    probabilities, labels, wrong_images = [], [], {}
    offset = 0
    # The test images as the trainer evaluated them: 8-bit pixels (data.stored), as float32.
    for images, batch_labels in prepared.test.batch(256).as_numpy_iterator():
        batch = signature(image=tf.constant(images, tf.float32))["probabilities"].numpy()
        for index in np.flatnonzero(batch.argmax(axis=1) != batch_labels):
            wrong_images[offset + index] = images[index]
        probabilities.append(batch)
        labels.append(batch_labels)
        offset += len(images)
    if offset == 0:
        raise ValueError(f"the test split of {config.data.dataset!r} is empty: nothing to evaluate")
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)

    metrics = classification_metrics(probabilities, labels, class_names)
    sample = next(prepared.test.batch(max(throughput_batches)).as_numpy_iterator())[0]
    sample = sample.astype(np.float32)
    metrics["throughput_images_per_second"] = {
        str(batch): measure_throughput(signature, sample, batch, min_seconds=throughput_seconds)
        for batch in throughput_batches
    }
    metrics.update(
        dataset=config.data.dataset,
        split="test",
        num_examples=len(labels),
        saved_model=str(serving.saved_model_path(run_dir, version)),
    )

    out = run_dir / EVALUATION_DIR
    out.mkdir(exist_ok=True)
    rundir.write_json_atomic(out / "metrics.json", metrics)
    plot_confusion_matrix(
        np.array(metrics["confusion_matrix"]), class_names, out / "confusion_matrix.png"
    )
    plot_errors(wrong_images, probabilities, labels, class_names, out / "errors.png")
    return metrics


def classification_metrics(probabilities, labels, class_names):
    """Loss, top-1, top-k, per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = np.arange(len(class_names))
    predicted = probabilities.argmax(axis=1)
    true_probability = probabilities[np.arange(len(labels)), labels]
    k = min(TOP_K, len(class_names))
    top_k = np.argsort(-probabilities, axis=1)[:, :k]
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    return {
        # The plain cross-entropy, without the label smoothing training may have used.
        "loss": float(-np.mean(np.log(np.clip(true_probability, 1e-7, 1.0)))),
        "top1_accuracy": float(np.mean(predicted == labels)),
        f"top{k}_accuracy": float(np.mean((top_k == labels[:, None]).any(axis=1))),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
    }


def measure_throughput(signature, images, batch_size, *, min_seconds=1.0):
    """Images per second of `signature` on batches of `batch_size` (after one warm-up call)."""
    import tensorflow as tf

    repeats = math.ceil(batch_size / len(images))
    batch = tf.constant(np.concatenate([images] * repeats)[:batch_size])
    signature(image=batch)
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < min_seconds:
        signature(image=batch)["probabilities"].numpy()
        calls += 1
    return round(calls * batch_size / (time.perf_counter() - started), 1)


def plot_confusion_matrix(matrix, class_names, path):
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    from training.rundir import write_bytes_atomic

    size = min(4 + 0.45 * len(class_names), 30)
    figure = Figure(figsize=(size, size), dpi=100, layout="constrained")
    axes = figure.subplots()
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(
        ax=axes,
        cmap="Blues",
        colorbar=False,
        include_values=len(class_names) <= 30,
        xticks_rotation="vertical" if len(class_names) > 10 else "horizontal",
    )
    axes.set_title(
        f"Confusion matrix ({int(matrix.sum())} images, "
        f"{np.trace(matrix) / max(matrix.sum(), 1):.2%} correct)"
    )
    _save(figure, path, write_bytes_atomic)


def plot_errors(wrong_images, probabilities, labels, class_names, path, *, count=ERROR_IMAGES):
    """A grid of the misclassified images whose true class got the lowest probability."""
    from matplotlib.figure import Figure

    from training.rundir import write_bytes_atomic

    indices = sorted(wrong_images, key=lambda i: probabilities[i, labels[i]])[:count]
    columns = 4
    rows = max(1, math.ceil(len(indices) / columns))
    figure = Figure(figsize=(3 * columns, 3.3 * rows), dpi=100, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    if not indices:
        grid[0, 0].text(0, 0.5, "no misclassified images", fontsize=14)
    for axes, index in zip(grid.flat, indices):
        image = wrong_images[index]
        axes.imshow(
            image[..., 0] if image.shape[-1] == 1 else image,
            cmap="gray",
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        predicted = int(probabilities[index].argmax())
        axes.set_title(
            f"true {class_names[labels[index]]} "
            f"({probabilities[index, labels[index]]:.0%})\n"
            f"predicted {class_names[predicted]} "
            f"({probabilities[index, predicted]:.0%})",
            fontsize=11,
        )
    figure.suptitle("Worst-misclassified test images", fontsize=14, fontweight="bold")
    _save(figure, path, write_bytes_atomic)


def _save(figure, path, write_bytes_atomic):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())


def format_table(metrics):
    """The metrics as a plain-text table: the totals, then one row per class."""
    top_k = next(
        key
        for key in metrics
        if key.startswith("top") and key != "top1_accuracy" and key.endswith("_accuracy")
    )
    lines = [
        f"{metrics['dataset']} ({metrics['split']}, {metrics['num_examples']} images)",
        (
            f"loss {metrics['loss']:.4f}   top-1 {metrics['top1_accuracy']:.2%}   "
            f"{top_k.removesuffix('_accuracy').replace('top', 'top-')} {metrics[top_k]:.2%}"
        ),
        "throughput (images/s): "
        + ", ".join(
            f"batch {batch} {speed:,.0f}"
            for batch, speed in metrics["throughput_images_per_second"].items()
        ),
        "",
        f"{'class':>12}  {'precision':>9}  {'recall':>7}  {'f1':>6}  {'support':>7}",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"{name:>12}  {row['precision']:9.4f}  {row['recall']:7.4f}  "
            f"{row['f1']:6.4f}  {row['support']:7d}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a run's exported SavedModel on its test split or another dataset.",
    )
    parser.add_argument("run_dir", help="a run directory holding serving/<version>/")
    parser.add_argument(
        "--dataset",
        help="another dataset the trainer reads (its test split); default: the run's own",
    )
    parser.add_argument("--version", type=int, help="SavedModel version (default: the newest)")
    parser.add_argument(
        "--throughput-seconds",
        type=float,
        default=1.0,
        help="how long each batch size is timed (1.0)",
    )
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_run(
            args.run_dir,
            dataset=args.dataset,
            version=args.version,
            throughput_seconds=args.throughput_seconds,
        )
    except (ValueError, FileNotFoundError, ConnectionError) as error:
        sys.exit(f"error: {error}")
    print(format_table(metrics))
    print(
        f"\nwritten to {pathlib.Path(args.run_dir) / EVALUATION_DIR}/: metrics.json, "
        f"confusion_matrix.png, errors.png"
    )


if __name__ == "__main__":
    main()

"""Does the input pipeline keep up with training?

Measures, in alternating rounds, images/s of:
  pipeline/none      the training pipeline without augmentation (cached, shuffled, batched)
  pipeline/<aug>     the same with the augmentation preset
  model alone        the model's training steps fed from one in-memory batch (no pipeline)
  model + pipeline   the model's training steps fed by pipeline/<aug>
and prints the median of each. The pipeline keeps up when pipeline/<aug> is well above
"model alone" and "model + pipeline" is close to it: the median over rounds of their ratio is
printed last. Both share the same CPU cores.

    python benchmarks/pipeline_throughput.py [--rounds 3] [--pipeline-images 6400]
        [--batch-size 128]
"""

import argparse
import dataclasses
import importlib
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Before TensorFlow loads: importing `training` turns oneDNN on (training/onednn.py).
importlib.import_module("training")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from training import augment, data  # noqa: E402

SIGN_LANGUAGE = REPO.parent / "shared" / "datasets" / "sign_language_digits"


@dataclasses.dataclass
class Case:
    name: str
    source: str
    input_shape: tuple
    model: str
    # Enough training images for a few seconds per measurement, so fit's start-up is small.
    model_images: int
    preset: str = "standard"


CASES = [
    Case("digits 32x32x1", "digits", (32, 32, 1), "lenet5", model_images=12_800),
    Case(
        "sign language 96x96x3", str(SIGN_LANGUAGE), (96, 96, 3), "mobilenet_v2", model_images=640
    ),
]


def images_per_second(batches):
    """Images/s over `batches`, an iterable that yields (images, labels)."""
    start = time.perf_counter()
    seen = sum(int(images.shape[0]) for images, _ in batches)
    return seen / (time.perf_counter() - start)


class Bench:
    """One case's pipelines and model, built once and warmed up, measured in every round."""

    def __init__(self, case, batch_size, pipeline_images):
        self.case = case
        self.batch_size = batch_size
        self.pipeline_steps = max(1, pipeline_images // batch_size)
        self.model_steps = max(1, case.model_images // batch_size)
        splits = data.load_dataset(case.source)
        train = data.stored(data.fit_to_input(splits.train, case.input_shape))
        num_classes = len(splits.class_names)
        self.pipelines = {}
        for preset in ("none", case.preset):
            augmentation = augment.build_augmentation(
                preset,
                image_shape=case.input_shape,
                num_classes=num_classes,
                flip_safe=splits.flip_safe,
            )
            pipeline = data.make_pipeline(
                train,
                batch_size=batch_size,
                num_classes=num_classes,
                training=True,
                augment=augmentation,
                keep=data.can_keep(splits.num_examples["train"], case.input_shape),  # as trainer
            )
            # Repeated so every measurement sees the same number of batches; the first
            # (warm-up) pass fills the cache.
            self.pipelines[preset] = pipeline.repeat()
            for _ in self.pipelines[preset].take(self.pipeline_steps):
                pass
        self.model = zoo.create(case.model, input_shape=case.input_shape, num_classes=num_classes)
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.CategoricalCrossentropy(),
        )
        images, labels = next(iter(self.pipelines["none"]))
        self.in_memory = tf.data.Dataset.from_tensors((images, labels)).repeat()
        self.model.fit(self.in_memory, steps_per_epoch=5, epochs=1, verbose=0)

    def pipeline(self, preset):
        return images_per_second(self.pipelines[preset].take(self.pipeline_steps))

    def fit(self, dataset):
        start = time.perf_counter()
        history = self.model.fit(dataset, steps_per_epoch=self.model_steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        if not np.isfinite(history.history["loss"][-1]):
            raise RuntimeError(f"{self.case.model} diverged while being measured")
        return self.model_steps * self.batch_size / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pipeline-images", type=int, default=6400, help="images per pipeline measurement"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    benches = [
        Bench(case, args.batch_size, args.pipeline_images)
        for case in CASES
        if case.source == "digits" or pathlib.Path(case.source).is_dir()
    ]
    results = {bench.case.name: {} for bench in benches}
    for round_index in range(args.rounds):
        # Cases and measurements alternate within each round, so load on this shared
        # machine spreads over all of them.
        for bench in benches:
            preset = bench.case.preset
            measured = {
                "pipeline/none": bench.pipeline("none"),
                f"pipeline/{preset}": bench.pipeline(preset),
                f"{bench.case.model} alone": bench.fit(bench.in_memory),
                f"{bench.case.model} + pipeline/{preset}": bench.fit(bench.pipelines[preset]),
            }
            for key, value in measured.items():
                results[bench.case.name].setdefault(key, []).append(value)
            print(
                f"round {round_index + 1} {bench.case.name}: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in measured.items()),
                flush=True,
            )

    print(
        f"\nmedian images/s over {args.rounds} rounds, batch {args.batch_size}, "
        f"{os.cpu_count()} CPU cores"
    )
    for bench in benches:
        measured = results[bench.case.name]
        print(bench.case.name)
        for key, values in measured.items():
            print(
                f"  {key:<40} {statistics.median(values):>9,.0f}"
                f"   (min {min(values):,.0f}, max {max(values):,.0f})"
            )
        # Per round, so that load on the shared machine cancels out of each ratio.
        alone, fed = (
            measured[f"{bench.case.model} alone"],
            measured[f"{bench.case.model} + pipeline/{bench.case.preset}"],
        )
        ratios = [f / a for f, a in zip(fed, alone)]
        print(
            f"  {'fed by the pipeline / alone':<40} {statistics.median(ratios):>9.2f}"
            f"   (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    if len(benches) < len(CASES):
        print(f"sign language case skipped: {SIGN_LANGUAGE} not found")


if __name__ == "__main__":
    main()

"""Is mixed_bfloat16 faster than float32 for training on this machine?

Trains zoo resnet20 on synthetic 32x32x3 tensors (batch 128) under each dtype policy, in
alternating rounds (the machine is shared and noisy), and prints the median images/s of each
and their ratio. It is what justifies `--precision auto` picking mixed_bfloat16 on a CPU with
AVX512-BF16 (training.hardware.resolve_precision).

    python benchmarks/precision_throughput.py [--rounds 5] [--images 2048] [--batch-size 128]
"""

import argparse
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

import zoo  # noqa: E402
from training import hardware  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")
INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def compiled_resnet20(policy):
    """resnet20 built and compiled under `policy` (Keras reads the policy at layer creation)."""
    hardware.apply_precision(policy)
    model = zoo.create("resnet20", input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(),
    )
    return model


def images_per_second(model, images, labels, batch_size):
    started = time.perf_counter()
    model.fit(images, labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return len(images) / (time.perf_counter() - started)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=2048, help="images per timed epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(args.images, *INPUT_SHAPE)).astype("float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[rng.integers(0, NUM_CLASSES, args.images)]

    models = {policy: compiled_resnet20(policy) for policy in POLICIES}
    for model in models.values():  # trace the train step outside the timed rounds
        model.fit(
            images[: 2 * args.batch_size],
            labels[: 2 * args.batch_size],
            batch_size=args.batch_size,
            epochs=1,
            verbose=0,
        )

    rates = {policy: [] for policy in POLICIES}
    for round_index in range(args.rounds):
        # Swap the order every round so neither policy always runs on a warmer (or busier) CPU.
        order = POLICIES if round_index % 2 == 0 else POLICIES[::-1]
        for policy in order:
            rate = images_per_second(models[policy], images, labels, args.batch_size)
            rates[policy].append(rate)
            print(f"round {round_index + 1}: {policy:15s} {rate:7.1f} images/s", flush=True)

    medians = {policy: statistics.median(values) for policy, values in rates.items()}
    print(
        f"\nresnet20, {INPUT_SHAPE}, batch {args.batch_size}, {args.images} images/round, "
        f"{args.rounds} rounds; bf16 CPU flags: {hardware.cpu_supports_bf16()}"
    )
    for policy, median in medians.items():
        print(f"  {policy:15s} median {median:7.1f} images/s")
    print(f"  mixed_bfloat16 / float32 = {medians['mixed_bfloat16'] / medians['float32']:.2f}")


if __name__ == "__main__":
    main()

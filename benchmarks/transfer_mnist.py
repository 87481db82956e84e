"""Does transfer pay on few labels? MNIST digits 0-4 -> 5-9, and MNIST -> Sign Language Digits.

    python benchmarks/transfer_mnist.py                       # the README table: 3 seeds, 5/10/50
    python benchmarks/transfer_mnist.py --seeds 0 --sizes 5   # one cell row, quicker
    python benchmarks/transfer_mnist.py --sign-language       # the second example

Pretrains LeNet-5 on every training image of digits 0-4 (`--pretrain-epochs`), then adapts it
to digits 5-9 from N labelled training images per class (`--subset-per-class N`, seeded by the
run's seed) and evaluates on the whole 5-9 test set (4,861 images). Five ways, all with the
same epochs, batch and learning rate: from scratch, linear probe, fine-tune (pretrained layers
at the default 0.1x the learning rate, and at 1x) and two phases (probe for half the epochs,
then fine-tune at 0.1x). No validation split: with 5 labels per class there is nothing to
spare, so every run trains its fixed epochs. Each run is an ordinary `training.train` call with
the flags printed before it. MNIST is read from the IDX files of ../shared/datasets/mnist into
one .npz in the output folder (`--dataset mnist --manual-dir ...` gives the same images but
scans all 60,000 for every subset).
"""

import argparse
import importlib
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Before TensorFlow loads: importing `training` turns oneDNN on (training/onednn.py).
importlib.import_module("training")

MNIST_FILES = REPO.parent / "shared" / "datasets" / "mnist"
SIGN_LANGUAGE = REPO.parent / "shared" / "datasets" / "sign_language_digits"
SOURCE_CLASSES = "0,1,2,3,4"
TARGET_CLASSES = "5,6,7,8,9"
MODES = {
    "scratch": [],
    "linear_probe": ["--transfer", "linear_probe"],
    "finetune": ["--transfer", "finetune"],
    "finetune_lr_x1": ["--transfer", "finetune", "--backbone-lr-multiplier", "1"],
    "two_phase": ["--transfer", "finetune", "--two-phase"],
}
ADAPT_EPOCHS = 30
ADAPT_BATCH = 8  # 5 images per class are 25: batches of 8 give 4 steps per epoch


def mnist_npz(folder):
    """MNIST's IDX files as one .npz (x_train, y_train, x_test, y_test), made once."""
    path = pathlib.Path(folder) / "mnist.npz"
    if not path.exists():
        import gzip

        import numpy as np

        def read(name, offset):
            with gzip.open(MNIST_FILES / name) as file:
                return np.frombuffer(file.read(), np.uint8, offset=offset)

        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            x_train=read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
            y_train=read("train-labels-idx1-ubyte.gz", 8).astype(np.int64),
            x_test=read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
            y_test=read("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64),
        )
    return path


def pretrain_flags(output_dir, mnist, *, epochs=2, subset_per_class=None):
    """LeNet-5 on digits 0-4; the run lands in <output_dir>/source."""
    flags = [
        "--dataset",
        str(mnist),
        "--classes",
        SOURCE_CLASSES,
        "--epochs",
        str(epochs),
        "--output-dir",
        str(output_dir),
        "--run-name",
        "source",
        "--precision",
        "float32",
    ]
    if subset_per_class:
        flags += ["--subset-per-class", str(subset_per_class)]
    return flags


def adapt_flags(
    source_run, mode, per_class, seed, output_dir, dataset_flags, *, epochs=ADAPT_EPOCHS
):
    """One adaptation run: `mode` (a key of MODES) from `source_run` on N images per class."""
    flags = [
        *dataset_flags,
        "--subset-per-class",
        str(per_class),
        "--seed",
        str(seed),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(ADAPT_BATCH),
        "--val-split",
        "0",
        "--patience",
        "0",
        "--checkpoint-best",
        "false",
        "--output-dir",
        str(output_dir),
        "--run-name",
        f"{mode}-{per_class}-seed{seed}",
        "--precision",
        "float32",
    ]
    if mode != "scratch":
        flags += ["--init-from", str(source_run), *MODES[mode]]
    if "--two-phase" in MODES[mode]:
        flags += ["--probe-epochs", str(epochs // 2)]
    return flags


def run(flags):
    """`python -m training.run FLAGS` as a function call; returns its RunResult."""
    from training import train
    from training.config import config_from_args
    from training.run import parse_args

    print("python -m training.run " + " ".join(flags), flush=True)
    return train(config_from_args(parse_args(flags)).validate())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 50])
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument(
        "--sign-language",
        action="store_true",
        help="adapt to the Sign Language Digits photos instead of digits 5-9",
    )
    parser.add_argument("--output-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args()

    import logging

    import numpy as np

    logging.basicConfig(level=logging.WARNING)
    output = pathlib.Path(args.output_dir or tempfile.mkdtemp(prefix="transfer-mnist-"))
    mnist = mnist_npz(output)
    source = output / "source"
    if not (source / "model.keras").exists():
        result = run(pretrain_flags(output, mnist, epochs=args.pretrain_epochs))
        print(f"source: digits 0-4, test accuracy {result.metrics['test_accuracy']:.4f}")
    if args.sign_language:
        # Its own split (none ships): 20% test, carved stratified and seeded like any folder.
        dataset_flags = ["--dataset", str(SIGN_LANGUAGE), "--test-split", "0.2"]
    else:
        dataset_flags = ["--dataset", str(mnist), "--classes", TARGET_CLASSES]

    table = {}
    for per_class in args.sizes:
        for mode in MODES:
            scores = []
            for seed in args.seeds:
                result = run(
                    adapt_flags(source, mode, per_class, seed, output / "adapt", dataset_flags)
                )
                scores.append(result.metrics["test_accuracy"])
                print(f"{mode} {per_class}/class seed {seed}: {scores[-1]:.4f}", flush=True)
            table[per_class, mode] = scores

    print(f"\nmean test accuracy over seeds {args.seeds} (min-max)")
    print("| images per class | " + " | ".join(MODES) + " |")
    print("| ---: |" + " ---: |" * len(MODES))
    for per_class in args.sizes:
        cells = [
            f"{100 * np.mean(table[per_class, m]):.1f}% ({100 * min(table[per_class, m]):.1f}"
            f"-{100 * max(table[per_class, m]):.1f})"
            for m in MODES
        ]
        print(f"| {per_class} | " + " | ".join(cells) + " |")
    print(f"runs in {output}")


if __name__ == "__main__":
    main()

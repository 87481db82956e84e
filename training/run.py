"""`python -m training.run`: train a zoo model on a dataset and export it.

python -m training.run                                  # lenet5 on the bundled digits data
python -m training.run --model resnet20 --dataset cifar10 --epochs 30 --augment standard
python -m training.run --config experiments/resnet20.yaml --set optimizer.lr=0.05
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import json
import logging
import sys

from training import transfer
from training.config import add_arguments, config_from_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.run",
        description="Train a zoo model on an image dataset and export it as a servable model.",
        epilog=transfer.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        config = config_from_args(args).validate()
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")

    from training.callbacks import TrainingDiverged
    from training.trainer import train  # imports TensorFlow: after the arguments are checked

    try:
        result = train(config)
    except (ValueError, FileNotFoundError, ConnectionError, TrainingDiverged) as error:
        sys.exit(f"error: {error}")
    print(json.dumps({"run_dir": str(result.run_dir), **result.metrics}, indent=2))


if __name__ == "__main__":
    main()

"""`python -m tuning.run`: a KerasTuner search over training configs.

    python -m tuning.run --model stagewise_cnn --dataset digits --max-trials 20 --epochs 10
    python -m tuning.run --model resnet20 --dataset mnist --manual-dir DIR --tuner hyperband \
        --max-epochs 27 --hyperband-factor 3
    python -m tuning.run --config sweep.yaml          # fixed config, search: and space: in one file
    python -m tuning.run --config sweep.yaml --chief 10.0.0.1:8000 --worker-id tuner0   # one worker

Results land in <output-dir>/<name>/; the same command again resumes the search.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import logging
import sys

import yaml

from training.config import (
    TrainConfig,
    add_field_arguments,
    deep_update,
    flag_values,
    from_dict,
    parse_assignment,
)
from tuning.search import SearchSettings, load_sweep, run_search

# Training-config values with a flag of their own here (any other: --set); they fix the data
# and the model a search runs on. The trainer's --epochs, --patience, --output-dir and
# --overwrite mean the search's own here.
TRAINING_FLAGS = (
    "model.name",
    "data.dataset",
    "data.data_dir",
    "data.manual_dir",
    "data.image_size",
)
SEARCH = "search."  # where the search settings' flags land among the parsed arguments


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tuning.run",
        description="Search hyperparameters of a zoo model with KerasTuner; every trial is an "
        "ordinary training run.",
        epilog="A sweep YAML holds the training config's sections (fixed values), a search: "
        "section (these flags' names) and a space: section (path: {type, min, max, step, "
        "sampling, values} or null). Flags override the file.",
    )
    parser.add_argument(
        "--config", metavar="YAML", help="sweep file: config sections, search: and space:"
    )
    fixed = "fixed training config"
    groups = add_field_arguments(
        parser, TrainConfig, paths=TRAINING_FLAGS, groups={"model": fixed, "data": fixed}
    )
    groups[fixed].add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="fix any training-config value, e.g. --set optimizer.name=sgd (it leaves the space)",
    )
    groups = add_field_arguments(parser, SearchSettings, prefix=SEARCH, groups={"": "search"})
    groups["search"].add_argument(
        "--space",
        action="append",
        default=[],
        metavar="PATH=YAML",
        help="change one space entry, e.g. --space 'optimizer.lr={min: 1e-4}' or "
        "--space augment.preset=null",
    )
    return parser.parse_args(argv)


def sweep_from_args(args) -> tuple:
    """(fixed config values, search settings, space overrides): the file, then the flags."""
    fixed, search, space = load_sweep(args.config) if args.config else ({}, {}, {})
    deep_update(fixed, flag_values(args, TrainConfig))
    for assignment in args.set:
        deep_update(fixed, parse_assignment(assignment))
    deep_update(search, flag_values(args, SearchSettings, prefix=SEARCH))
    for assignment in args.space:
        path, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"--space expects PATH=YAML, got {assignment!r}.")
        space[path.strip()] = yaml.safe_load(raw)
    return fixed, from_dict(search, SearchSettings, prefix=SEARCH).check(), space


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        fixed, settings, space = sweep_from_args(args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")

    try:
        result = run_search(fixed, settings, space)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        sys.exit(f"error: {error}")
    if settings.is_chief:
        print(f"results in {result.search_dir}", flush=True)


if __name__ == "__main__":
    main()

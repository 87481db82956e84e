"""`python -m tuning.run`: a KerasTuner search over training configs.

    python -m tuning.run --model stagewise_cnn --dataset digits --tuner random --max-trials 20 --epochs 10
    python -m tuning.run --model resnet20 --dataset mnist --manual-dir DIR --tuner hyperband --max-epochs 27
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

from training.config import deep_update, parse_assignment
from tuning.hypermodel import OBJECTIVES
from tuning.search import TUNERS, SearchSettings, load_sweep, run_search

# Flags that set the training config: dest -> config path.
CONFIG_FLAGS = {"model": "model.name", "dataset": "data.dataset", "data_dir": "data.data_dir",
                "manual_dir": "data.manual_dir", "image_size": "data.image_size"}
SEARCH_FLAGS = ("tuner", "max_trials", "epochs", "patience", "max_epochs", "objective", "name",
                "output_dir", "overwrite", "retrain_best", "chief", "worker_id")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tuning.run",
        description="Search hyperparameters of a zoo model with KerasTuner; every trial is an "
                    "ordinary training run.",
        epilog="A sweep YAML holds the training config's sections (fixed values), a search: "
               "section (these flags' names) and a space: section (path: {type, min, max, step, "
               "sampling, values} or null). Flags override the file.",
    )
    arg = parser.add_argument
    arg("--config", metavar="YAML", help="sweep file: config sections, search: and space:")
    fixed = parser.add_argument_group("fixed training config")
    fixed.add_argument("--model", default=argparse.SUPPRESS, help="zoo model name")
    fixed.add_argument("--dataset", default=argparse.SUPPRESS, metavar="NAME|PATH",
                       help="digits, a tensorflow-datasets name, a folder or a .npz")
    fixed.add_argument("--data-dir", default=argparse.SUPPRESS, metavar="DIR",
                       help="tensorflow-datasets data directory")
    fixed.add_argument("--manual-dir", default=argparse.SUPPRESS, metavar="DIR",
                       help="folder with a tfds dataset's original files")
    fixed.add_argument("--image-size", type=int, default=argparse.SUPPRESS, metavar="PX",
                       help="side of the square model input")
    fixed.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                       help="fix any config value, e.g. --set optimizer.name=sgd (leaves the space)")
    search = parser.add_argument_group("search")
    search.add_argument("--tuner", choices=TUNERS, default=argparse.SUPPRESS,
                        help="random (default), bayesian, hyperband or grid")
    search.add_argument("--max-trials", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="trials to run (default 10; hyperband sets its own)")
    search.add_argument("--epochs", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="epochs per trial (default 10); the full run keeps the config's epochs")
    search.add_argument("--patience", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="early stopping inside each trial (default 3; 0: off)")
    search.add_argument("--max-epochs", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="hyperband: epochs of its longest trials (default 27)")
    search.add_argument("--objective", choices=tuple(OBJECTIVES), default=argparse.SUPPRESS,
                        help="what to optimize (default val_accuracy)")
    search.add_argument("--space", action="append", default=[], metavar="PATH=YAML",
                        help="change one space entry, e.g. --space 'optimizer.lr={min: 1e-4}' "
                             "or --space augment.preset=null")
    output = parser.add_argument_group("output")
    output.add_argument("--name", default=argparse.SUPPRESS,
                        help="search name (default <model>-<dataset>-<tuner>)")
    output.add_argument("--output-dir", default=argparse.SUPPRESS, metavar="DIR",
                        help="where searches land (default saved_models/tuning)")
    output.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                        help="start the search over instead of resuming it")
    output.add_argument("--retrain-best", action="store_true", default=argparse.SUPPRESS,
                        help="retrain the best config on train+validation and export it")
    distributed = parser.add_argument_group("distributed search (every process runs the same command)")
    distributed.add_argument("--chief", default=argparse.SUPPRESS, metavar="HOST:PORT",
                             help="address of the chief, which serves the oracle")
    distributed.add_argument("--worker-id", default=argparse.SUPPRESS, metavar="ID",
                             help="chief, or tuner0, tuner1, ... for the workers")
    return parser.parse_args(argv)


def sweep_from_args(args) -> tuple:
    """(fixed config values, search settings, space overrides): the file, then the flags."""
    fixed, search, space = load_sweep(args.config) if args.config else ({}, {}, {})
    given = vars(args)
    for dest, path in CONFIG_FLAGS.items():
        if dest in given:
            deep_update(fixed, parse_assignment(f"{path}={given[dest]}"))
    for assignment in args.set:
        deep_update(fixed, parse_assignment(assignment))
    search.update({key: given[key] for key in SEARCH_FLAGS if key in given})
    for assignment in args.space:
        path, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"--space expects PATH=YAML, got {assignment!r}.")
        space[path.strip()] = yaml.safe_load(raw)
    return fixed, SearchSettings.from_dict(search).check(), space


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

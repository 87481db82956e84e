"""`python -m training.doctor`: check a model and its data before the long run.

    python -m training.doctor                                   # the default job (lenet5, digits)
    python -m training.doctor --model resnet20 --dataset mnist --manual-dir ../shared/datasets/mnist
    python -m training.doctor --config experiments/resnet20.yaml --check lr_range

Takes the flags and config files of `python -m training.run`, plus `--check NAME`
(repeatable; default: all). Prints a table, writes report.json and images to
saved_models/doctor/<run-name>/, and exits 1 when a check fails.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import logging
import sys

from training.config import add_arguments, config_from_args
from training.doctor.config_run import examine_config, report_dir, rerun_command
from training.doctor.examine import CHECKS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.doctor",
        description="Check a model and its data before training: data, initial loss, "
        "overfitting one batch, a short run, a learning-rate range test, "
        "activations and gradients, NaN.",
        epilog="Every flag of python -m training.run works here, with the same meaning.",
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        choices=list(CHECKS),
        metavar="NAME",
        help=f"run only this check (repeatable): {', '.join(CHECKS)}",
    )
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        config = config_from_args(args).validate()
        directory = report_dir(config)
        report = examine_config(config, checks=args.check)
    except (ValueError, FileNotFoundError, ConnectionError) as error:
        sys.exit(f"error: {error}")
    print(report.table())
    extra = {}
    if "suggested_lr" in report.findings:
        extra["command"] = rerun_command(argv, report.findings["suggested_lr"])
        print(
            f"\nsuggested learning rate {report.findings['suggested_lr']:.2g}:\n"
            f"  {extra['command']}"
        )
    report.save(directory, extra)
    print(f"\n{report.verdict.upper()}: report.json and images in {directory}")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()

"""Wall-clock time to a good model on real data, with the exact commands a user would type.

    python -m benchmarks.time_to_accuracy [--tasks lenet5-mnist,best-mnist,signs-10min]
        [--precision onednn_bfloat16]

Each task is one `python -m training.run` command on ../shared/datasets, run as its own
process and timed end to end (data preparation, tracing, every epoch, evaluation, export). The
table gives its test accuracy, the whole command's seconds, and from the run's history.csv the
first epoch whose validation accuracy reached the target, with the training seconds it took.
--precision adds `--precision NAME` to every command (the trainer's `auto` otherwise), to check
a precision's accuracy before `auto` picks it. Runs land in saved_models/time_to_accuracy/.
Writes benchmarks/results/<machine>-<date>-time_to_accuracy[-<precision>].json.
"""

import argparse
import csv
import dataclasses
import pathlib

from benchmarks import common
from training import checks, hardware

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets"
OUTPUT_DIR = pathlib.Path("saved_models") / "time_to_accuracy"
MNIST = ["--dataset", "mnist", "--manual-dir", str(SHARED / "mnist")]


@dataclasses.dataclass(frozen=True)
class Task:
    target: float | None  # test accuracy to reach; None: the best within budget_seconds
    arguments: tuple
    why: str
    budget_seconds: float | None = None


TASKS = {
    "lenet5-mnist": Task(
        0.990,
        (*MNIST, "--model", "lenet5", "--epochs", "15"),
        "LeCun et al. 1998 report 0.95% test error for LeNet-5",
    ),
    "best-mnist": Task(
        0.995,
        (*MNIST, "--model", "resnet20", "--augment-ops", "random_crop", "--epochs", "6"),
        "the best zoo model on MNIST",
    ),
    "signs-10min": Task(
        None,
        (
            "--dataset",
            str(SHARED / "sign_language_digits"),
            "--model",
            "resnet20",
            "--image-size",
            "64",
            "--augment-ops",
            "random_crop,rotation,zoom",
            "--epochs",
            "25",
        ),
        "Sign Language Digits, the best in 10 minutes",
        budget_seconds=600.0,
    ),
}


def first_epoch_at(history_path, target):
    """(epoch, training seconds) of the first epoch whose val_accuracy reached `target`."""
    if target is None:
        return None, None
    with open(history_path, newline="") as f:
        for row in csv.DictReader(f):
            if float(row["val_accuracy"]) >= target:
                return int(row["epoch"]), float(row["seconds"])
    return None, None


def run_task(name, precision=None):
    task = TASKS[name]
    arguments = (*task.arguments, *(("--precision", precision) if precision else ()))
    # As a user types it from the project's root.
    shown = "python -m training.run " + " ".join(arguments).replace(
        str(SHARED), "../shared/datasets"
    )
    print(f"\n{name}: {shown}", flush=True)
    metrics, seconds = common.run_training([*arguments, "--overwrite"], OUTPUT_DIR, name)
    run_dir = OUTPUT_DIR / name
    epoch, epoch_seconds = first_epoch_at(run_dir / "history.csv", task.target)
    accuracy = metrics["test_accuracy"]
    reached = accuracy >= task.target if task.target else seconds <= task.budget_seconds
    return {
        "task": name,
        "command": shown,
        "why": task.why,
        "target": task.target,
        "budget_seconds": task.budget_seconds,
        "test_accuracy": accuracy,
        "wall_clock_seconds": round(seconds, 1),
        "train_seconds": metrics["train_seconds"],
        "epochs_completed": metrics["epochs_completed"],
        "train_images_per_second": metrics.get("train_images_per_second"),
        "val_target_epoch": epoch,
        "val_target_seconds": epoch_seconds,
        "reached": reached,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated")
    parser.add_argument(
        "--precision",
        choices=hardware.PRECISIONS,
        help="added to every command (default: none, the trainer's auto)",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if not (SHARED / "mnist").is_dir():
        parser.error(f"the shared datasets are not at {SHARED} (see ../shared/datasets/README.md)")
    if args.precision:
        try:  # before any long run: this machine may refuse the precision (onednn_bfloat16)
            hardware.resolve_precision(args.precision)
        except checks.ConfigError as error:
            parser.error(str(error))

    facts = common.machine_facts()
    print(common.facts_line(facts), flush=True)
    results = [run_task(name, args.precision) for name in names]
    rows = [
        [
            r["task"],
            f"`{r['command']}`",
            f"{r['target']:.1%}" if r["target"] else f"best in {r['budget_seconds']:.0f} s",
            f"{r['test_accuracy']:.2%}",
            "yes" if r["reached"] else "no",
            f"{r['wall_clock_seconds']:,.0f}",
            f"{r['train_seconds']:,.0f}",
            "-"
            if r["val_target_epoch"] is None
            else f"{r['val_target_epoch']} ({r['val_target_seconds']:,.0f} s)",
        ]
        for r in results
    ]
    header = [
        "task",
        "command",
        "target",
        "test accuracy",
        "reached",
        "command seconds",
        "training seconds",
        "val target at epoch",
    ]
    suffix = f"-{args.precision}" if args.precision else ""
    path = common.write_results(f"time_to_accuracy{suffix}", facts, results)
    print(f"\n{common.facts_line(facts)}\n")
    print(common.markdown_table(header, rows))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

"""This checkout against an earlier commit, on this machine: the same `training.run` commands,
alternating old, new, old, new, each run as its own process.

    python -m benchmarks.versus [--baseline d9cedb2] [--jobs lenet5-digits,stagewise_cnn-digits]
        [--rounds 3]

Speed figures from different machines cannot be compared, so "N times faster than before" is
measured here by running both versions side by side. The baseline is checked out with
`git worktree` into a temporary directory (removed afterwards); both run the same arguments at
their own defaults. From each run's metrics.json: the steady training speed
(`train_images_per_second`), the whole fit's seconds (`train_seconds`: the first epoch's tracing,
validation and checkpoint writes included), the test accuracy and the whole command's seconds;
ratios are per round, then the median. Writes benchmarks/results/<machine>-<date>-versus.json.
"""

import argparse
import pathlib
import subprocess
import tempfile

from benchmarks import common

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The last commit before the speed work (fused BN, steps_per_execution, ...): the code the
# speed issue measured.
BASELINE = "d9cedb2"
# name: training.run arguments; the datasets are embedded, so no run needs ../shared.
JOBS = {
    "lenet5-digits": (),
    "stagewise_cnn-digits": ("--model", "stagewise_cnn"),
}


def run_job(checkout, arguments, output_dir, name):
    """One `python -m training.run` in `checkout`: the figures compared from its metrics.json."""
    metrics, seconds = common.run_training(arguments, output_dir, name, cwd=checkout, quiet=True)
    return {
        "train_images_per_second": metrics["train_images_per_second"],
        "train_seconds": metrics["train_seconds"],
        "test_accuracy": metrics["test_accuracy"],
        "command_seconds": round(seconds, 1),
    }


def compare(baseline, jobs, rounds, work_dir):
    old_checkout = work_dir / "baseline"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(old_checkout), baseline],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        checkouts = {"baseline": old_checkout, "current": ROOT}
        keys = [(job, version) for job in jobs for version in checkouts]
        count = iter(range(len(keys) * rounds))

        def measure(key):
            job, version = key
            name = f"{job}-{version}-{next(count)}"
            figures = run_job(checkouts[version], JOBS[job], work_dir / "runs", name)
            print(f"{job} {version}: {figures}", flush=True)
            return figures

        return common.run_rounds(keys, rounds, measure)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(old_checkout)], cwd=ROOT, check=False
        )


def column(runs, key):
    return [run[key] for run in runs]


def summarize(figures, jobs):
    rows, results = [], {}
    for job in jobs:
        old, new = figures[(job, "baseline")], figures[(job, "current")]
        speed_old = column(old, "train_images_per_second")
        speed_new = column(new, "train_images_per_second")
        fit_old, fit_new = column(old, "train_seconds"), column(new, "train_seconds")
        seconds_old, seconds_new = column(old, "command_seconds"), column(new, "command_seconds")
        results[job] = {
            "arguments": list(JOBS[job]),
            "baseline": old,
            "current": new,
            "train_speed_ratio": common.median_ratio(speed_new, speed_old),
            "fit_seconds_ratio": common.median_ratio(fit_old, fit_new),
            "command_seconds_ratio": common.median_ratio(seconds_old, seconds_new),
        }
        accuracy = "/".join(
            f"{common.median(column(runs, 'test_accuracy')):.2%}" for runs in (old, new)
        )
        rows.append(
            [
                job,
                f"{common.median(speed_old):,.0f}",
                f"{common.median(speed_new):,.0f}",
                f"{results[job]['train_speed_ratio']:.2f}",
                f"{common.median(fit_old):.1f} / {common.median(fit_new):.1f}",
                f"{results[job]['fit_seconds_ratio']:.2f}",
                accuracy,
                f"{common.median(seconds_old):.0f} / {common.median(seconds_new):.0f}",
                f"{results[job]['command_seconds_ratio']:.2f}",
            ]
        )
    header = [
        "job",
        "baseline train images/s",
        "current",
        "speed ratio",
        "fit seconds",
        "fit ratio",
        "test accuracy (baseline/current)",
        "command seconds",
        "command ratio",
    ]
    return results, common.markdown_table(header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="a commit, tag or branch")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"from {', '.join(JOBS)}")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    jobs = args.jobs.split(",")
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        parser.error(f"unknown jobs {unknown}; choose from {', '.join(JOBS)}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")

    facts = common.machine_facts()
    print(common.facts_line(facts), flush=True)
    with tempfile.TemporaryDirectory(prefix="versus-") as work_dir:
        figures = compare(args.baseline, jobs, args.rounds, pathlib.Path(work_dir))
    results, text = summarize(figures, jobs)
    results = {"baseline": args.baseline, "rounds": args.rounds, "jobs": results}
    path = common.write_results("versus", facts, results)
    print(f"\n{common.facts_line(facts)}\nbaseline {args.baseline}, {args.rounds} rounds\n")
    print(text)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

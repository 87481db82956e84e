import os
import pathlib
import platform
import subprocess
import sys

import pytest

from benchmarks import versus
from training import onednn


def test_summary_gives_per_round_ratios_and_median_accuracies():
    def run(speed, accuracy, seconds):
        return {
            "train_images_per_second": speed,
            "train_seconds": seconds / 2,
            "test_accuracy": accuracy,
            "command_seconds": seconds,
        }

    figures = {
        ("lenet5-digits", "baseline"): [run(100, 0.97, 60), run(50, 0.98, 80), run(100, 0.96, 60)],
        ("lenet5-digits", "current"): [run(300, 0.97, 30), run(200, 0.98, 20), run(250, 0.99, 40)],
    }
    results, table = versus.summarize(figures, ["lenet5-digits"])
    job = results["lenet5-digits"]
    # Per round 3.0, 4.0, 2.5 -> median 3.0 (the ratio of medians would be 2.5).
    assert job["train_speed_ratio"] == 3.0
    # Seconds old / new per round: 2.0, 4.0, 1.5 -> 2.0.
    assert job["command_seconds_ratio"] == job["fit_seconds_ratio"] == 2.0
    row = (
        "| lenet5-digits | 100 | 250 | 3.00 | 30.0 / 15.0 | 2.00 | 97.00%/98.00% | 60 / 30 | 2.00 |"
    )
    assert row in table


def test_the_baseline_worktree_is_removed_even_when_a_run_fails(tmp_path, monkeypatch):
    def failing_run(checkout, arguments, output_dir, name):
        assert (checkout / "training" / "run.py").is_file()
        raise RuntimeError("training.run failed")

    monkeypatch.setattr(versus, "run_job", failing_run)
    with pytest.raises(RuntimeError, match="training.run failed"):
        versus.compare("HEAD", ["lenet5-digits"], 1, tmp_path)
    assert not (tmp_path / "baseline").exists()
    listed = subprocess.run(
        ["git", "worktree", "list"], cwd=versus.ROOT, capture_output=True, text=True, check=True
    )
    assert str(tmp_path) not in listed.stdout


def test_unknown_jobs_are_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        versus.main(["--jobs", "lenet5-digits,vgg16-imagenet"])
    assert "unknown jobs ['vgg16-imagenet']" in capsys.readouterr().err


def test_a_failing_run_reports_the_command_and_its_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)--model no_such_model.*no_such_model"):
        versus.run_job(versus.ROOT, ("--model", "no_such_model"), tmp_path, "bad")
    assert not (tmp_path / "bad").exists()


def test_runs_start_from_the_environment_as_launched_not_the_trainers_defaults():
    # An older commit must run as it shipped: without the oneDNN default this one's training
    # package puts into the benchmark's own environment.
    show = (
        "import os, benchmarks; "
        "print(benchmarks.LAUNCH_ENVIRONMENT.get('TF_ENABLE_ONEDNN_OPTS'), "
        "os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    )
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    shown = subprocess.run(
        [sys.executable, "-c", show],
        cwd=pathlib.Path(__file__).resolve().parents[2],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown[0] == "None"
    assert shown[1] == ("1" if platform.machine().lower() in onednn.X86_MACHINES else "None")

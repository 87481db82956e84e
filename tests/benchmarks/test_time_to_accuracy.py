"""benchmarks.time_to_accuracy: the exact command each task runs, and a precision the machine
refuses is refused before any run starts."""

import pytest

from benchmarks import time_to_accuracy
from training import hardware


@pytest.fixture
def commands(monkeypatch, tmp_path):
    """Record the training.run arguments instead of training; write the files a run leaves."""
    ran = []

    def fake_run_training(arguments, output_dir, run_name):
        ran.append(arguments)
        run_dir = tmp_path / run_name
        run_dir.mkdir()
        (run_dir / "history.csv").write_text("epoch,val_accuracy,seconds\n1,0.98,10\n2,0.995,20\n")
        metrics = {"test_accuracy": 0.993, "train_seconds": 20.0, "epochs_completed": 2}
        return metrics, 25.0

    monkeypatch.setattr(time_to_accuracy.common, "run_training", fake_run_training)
    monkeypatch.setattr(time_to_accuracy, "OUTPUT_DIR", tmp_path)
    return ran


def test_a_task_runs_its_command_with_the_precision_added(commands):
    result = time_to_accuracy.run_task("lenet5-mnist", "float32")
    assert commands == [
        [*time_to_accuracy.TASKS["lenet5-mnist"].arguments, "--precision", "float32", "--overwrite"]
    ]
    assert result["command"].endswith("--model lenet5 --epochs 15 --precision float32")
    assert "../shared/datasets/mnist" in result["command"]
    assert (result["val_target_epoch"], result["val_target_seconds"]) == (2, 20.0)
    assert result["reached"]


def test_without_a_precision_the_command_is_the_task_s_own(commands):
    result = time_to_accuracy.run_task("lenet5-mnist")
    assert commands == [[*time_to_accuracy.TASKS["lenet5-mnist"].arguments, "--overwrite"]]
    assert "--precision" not in result["command"]


def test_a_precision_this_machine_refuses_stops_before_any_run(commands, monkeypatch, capsys):
    if not time_to_accuracy.SHARED.joinpath("mnist").is_dir():
        pytest.skip("needs ../shared/datasets")
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: False)
    with pytest.raises(SystemExit):
        time_to_accuracy.main(["--tasks", "lenet5-mnist", "--precision", "onednn_bfloat16"])
    assert "native bfloat16" in capsys.readouterr().err
    assert commands == []


def test_an_unknown_precision_names_the_valid_ones(commands, capsys):
    with pytest.raises(SystemExit):
        time_to_accuracy.main(["--precision", "float8"])
    assert "mixed_bfloat16" in capsys.readouterr().err
    assert commands == []

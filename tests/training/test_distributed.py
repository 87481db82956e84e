"""MirroredStrategy over two logical CPUs and MultiWorkerMirroredStrategy over two local
processes give the same weights as one device trained on the same global batches.

Each run is a subprocess (tests/training/_dist_worker.py): logical devices and the multi-worker
cluster must be configured before TensorFlow initializes, which pytest's process already did.
"""

import csv
import json
import os
import pathlib
import socket
import subprocess
import sys

import _dist_worker
import numpy as np
import pytest
import tensorflow as tf

WORKER = pathlib.Path(_dist_worker.__file__)
TIMEOUT = 90  # seconds for one process; a hung collective is killed, not waited on
RTOL = 1e-5


def run_processes(commands, envs):
    """Start every command at once (multi-worker peers wait for each other), kill all on timeout."""
    processes = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command, env in zip(commands, envs)
    ]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            results.append((process.returncode, stderr))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a worker did not finish within {TIMEOUT} s")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def worker_env(**extra):
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    return dict(env, TF_CPP_MIN_LOG_LEVEL="2", **extra)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def load_weights(path):
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def assert_same_weights(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-7)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Initial and final weights, and history, of the one-device run in this process."""
    run_dir = tmp_path_factory.mktemp("reference")
    model, history = _dist_worker.train(tf.distribute.get_strategy(), run_dir)
    initial = _dist_worker.build_model().get_weights()
    return {"initial": initial, "final": model.get_weights(), "history": history}


def test_reference_training_moves_the_weights(reference):
    # Otherwise "same final weights" below would hold for a run that never trained.
    change = max(np.abs(a - b).max() for a, b in zip(reference["initial"], reference["final"]))
    assert change > 1e-2
    assert reference["history"]["loss"][-1] < reference["history"]["loss"][0]


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(reference, tmp_path):
    command = [
        sys.executable,
        str(WORKER),
        "--strategy",
        "mirrored",
        "--logical-cpus",
        "2",
        "--precision",
        "float32",
        "--precision",
        "mixed_bfloat16",
        "--run-dir",
        str(tmp_path / "run"),
        "--out",
        str(tmp_path / "out"),
    ]
    [(returncode, stderr)] = run_processes([command], [worker_env()])
    assert returncode == 0, stderr[-3000:]

    float32 = json.loads((tmp_path / "out" / "float32.json").read_text())
    assert float32["replicas"] == 2
    assert_same_weights(load_weights(tmp_path / "out" / "float32.npz"), reference["final"])
    np.testing.assert_allclose(float32["loss"], reference["history"]["loss"], rtol=RTOL)
    np.testing.assert_allclose(float32["val_loss"], reference["history"]["val_loss"], rtol=RTOL)

    bfloat16 = json.loads((tmp_path / "out" / "mixed_bfloat16.json").read_text())
    assert bfloat16["replicas"] == 2
    assert bfloat16["output_dtype"] == "float32"
    assert all(np.isfinite(bfloat16["loss"]))
    # bfloat16 arithmetic lands near, not on, the float32 weights.
    bf16_weights = load_weights(tmp_path / "out" / "mixed_bfloat16.npz")
    for got, want in zip(bf16_weights, reference["final"]):
        np.testing.assert_allclose(got, want, atol=0.05)


def run_two_workers(tmp_path, *extra_args):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    commands, envs = [], []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        commands.append(
            [
                sys.executable,
                str(WORKER),
                "--strategy",
                "multi_worker",
                "--run-dir",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / f"worker{index}"),
                *extra_args,
            ]
        )
        envs.append(worker_env(TF_CONFIG=json.dumps(tf_config)))
    return run_processes(commands, envs)


@pytest.mark.slow
def test_two_local_workers_match_one_device_and_keep_apart(reference, tmp_path):
    for returncode, stderr in run_two_workers(tmp_path):
        assert returncode == 0, stderr[-3000:]

    reports = [json.loads((tmp_path / f"worker{i}" / "float32.json").read_text()) for i in range(2)]
    for index, report in enumerate(reports):
        assert report["replicas"] == 2
        assert_same_weights(
            load_weights(tmp_path / f"worker{index}" / "float32.npz"), reference["final"]
        )
        np.testing.assert_allclose(report["loss"], reference["history"]["loss"], rtol=RTOL)
        np.testing.assert_allclose(report["val_loss"], reference["history"]["val_loss"], rtol=RTOL)

    # Worker 0 is the chief and writes the run directory; worker 1 writes its own.
    assert [report["is_chief"] for report in reports] == [True, False]
    run_dir = tmp_path / "run" / "float32"
    assert reports[0]["worker_dir"] == str(run_dir)
    assert reports[1]["worker_dir"] == str(run_dir / "workertemp_worker_1")
    for report in reports:
        work_dir = pathlib.Path(report["worker_dir"])
        assert (work_dir / "backup" / "training_metadata.json").is_file()
        assert (work_dir / "last.weights.h5").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "fix, error",
    [
        ("none", "PerReplica"),  # the symbolic build reduces a distributed data batch
        ("build_only", "Invalid reduction dimension 0 for input with 0 dimensions"),  # metrics
    ],
    ids=["no_fix", "build_fix_only"],
)
def test_two_local_workers_fail_without_each_half_of_the_fix(tmp_path, fix, error):
    for returncode, stderr in run_two_workers(tmp_path, "--fix", fix):
        assert returncode != 0
        assert error in stderr, stderr[-3000:]


def rows_of(history_csv):
    with open(history_csv, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_trainer_command_runs_on_two_local_workers(tmp_path):
    """`python -m training.run --strategy multi_worker` end to end: worker 0 writes the run,
    worker 1 keeps its files apart, and both evaluate the same synchronized model."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    commands, envs = [], []
    for index in range(2):
        commands.append(
            [
                sys.executable,
                "-m",
                "training.run",
                "--strategy",
                "multi_worker",
                "--run-name",
                "two-workers",
                "--epochs",
                "2",
                "--output-dir",
                str(tmp_path),
            ]
        )
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        envs.append(
            worker_env(
                TF_CONFIG=json.dumps(tf_config),
                PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[2]),
            )
        )
    for returncode, stderr in run_processes(commands, envs):
        assert returncode == 0, stderr[-3000:]

    run = tmp_path / "two-workers"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["two-workers"]
    assert (run / ".finished").exists() and (run / "serving" / "1").is_dir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["epochs_completed"] == 2
    assert metrics["test_accuracy"] > 0.8
    # The same epochs and metrics on both workers; only the wall-clock `seconds` differ.
    chief_history = rows_of(run / "history.csv")
    worker_history = rows_of(run / "workertemp_worker_1" / "history.csv")
    for row in chief_history + worker_history:
        assert float(row.pop("seconds")) > 0
    assert len(chief_history) == 2 and worker_history == chief_history

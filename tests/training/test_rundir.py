import json

import pytest

from training.rundir import (
    FINISHED_MARKER,
    is_finished,
    mark_finished,
    resolve_run_dir,
    sanitize_run_name,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


@pytest.mark.parametrize(
    "raw, safe",
    [
        ("lenet5-digits", "lenet5-digits"),
        ("lenet5-../data/flowers", "lenet5_data_flowers"),
        ("resnet20-x.npz", "resnet20-x.npz"),
        ("mobilenet_v2-/home/me/My Photos/", "mobilenet_v2_home_me_My_Photos"),
        ("vgg16-C:\\data\\cats", "vgg16-C_data_cats"),
        ("..", None),
        ("a" * 300, "a" * 100),
    ],
)
def test_sanitize_run_name(raw, safe):
    if safe is None:
        with pytest.raises(ValueError, match="no letters or digits"):
            sanitize_run_name(raw)
    else:
        assert sanitize_run_name(raw) == safe


def test_new_run_is_created_under_a_sanitized_default_name(tmp_path):
    run = resolve_run_dir(tmp_path / "out", default_name="lenet5-../data/flowers")
    assert run.name == "lenet5_data_flowers"
    assert run.path == tmp_path / "out" / "lenet5_data_flowers"
    assert run.path.is_dir() and not run.resume
    assert list((tmp_path / "out").iterdir()) == [run.path]


def test_explicit_run_name_is_used_and_must_be_a_plain_name(tmp_path):
    run = resolve_run_dir(tmp_path, "my-run", default_name="lenet5-digits")
    assert run.path == tmp_path / "my-run"
    with pytest.raises(ValueError, match=r"'\.\./escape'.*'escape'"):
        resolve_run_dir(tmp_path, "../escape", default_name="lenet5-digits")
    assert not (tmp_path.parent / "escape").exists()


def test_empty_directory_is_a_new_run(tmp_path):
    (tmp_path / "lenet5-digits").mkdir()
    run = resolve_run_dir(tmp_path, default_name="lenet5-digits")
    assert run.name == "lenet5-digits" and not run.resume


def test_interrupted_run_is_resumed_even_with_overwrite(tmp_path):
    first = resolve_run_dir(tmp_path, default_name="lenet5-digits")
    (first.path / "history.csv").write_text("epoch,loss\n0,1.5\n")
    for overwrite in (False, True):
        again = resolve_run_dir(tmp_path, default_name="lenet5-digits", overwrite=overwrite)
        assert again.path == first.path and again.resume
        assert (again.path / "history.csv").read_text() == "epoch,loss\n0,1.5\n"


def test_finished_run_is_kept_and_the_next_free_suffix_is_used(tmp_path):
    first = resolve_run_dir(tmp_path, default_name="lenet5-digits")
    (first.path / "model.keras").write_bytes(b"weights")
    mark_finished(first.path)

    second = resolve_run_dir(tmp_path, default_name="lenet5-digits")
    assert second.name == "lenet5-digits-2" and not second.resume
    (second.path / "history.csv").write_text("epoch\n0\n")
    # The interrupted -2 is resumed, not skipped for a -3.
    resumed = resolve_run_dir(tmp_path, default_name="lenet5-digits")
    assert (resumed.name, resumed.resume) == ("lenet5-digits-2", True)

    mark_finished(second.path)
    third = resolve_run_dir(tmp_path, default_name="lenet5-digits")
    assert (third.name, third.resume) == ("lenet5-digits-3", False)
    assert (first.path / "model.keras").read_bytes() == b"weights"
    assert is_finished(first.path) and is_finished(second.path) and not is_finished(third.path)


def test_overwrite_replaces_a_finished_run(tmp_path):
    first = resolve_run_dir(tmp_path, default_name="lenet5-digits")
    (first.path / "model.keras").write_bytes(b"weights")
    mark_finished(first.path)
    again = resolve_run_dir(tmp_path, default_name="lenet5-digits", overwrite=True)
    assert (again.name, again.resume) == ("lenet5-digits", False)
    assert list(again.path.iterdir()) == []
    # Nothing of the removed run is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["lenet5-digits"]


def test_output_dir_or_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a directory")
    with pytest.raises(ValueError, match="output_dir .*out' is a file"):
        resolve_run_dir(tmp_path / "out", default_name="lenet5-digits")
    (tmp_path / "lenet5-digits").write_text("not a directory")
    with pytest.raises(ValueError, match="run directory .*lenet5-digits' is a file"):
        resolve_run_dir(tmp_path, default_name="lenet5-digits")


def test_mark_finished_writes_a_json_marker(tmp_path):
    mark_finished(tmp_path)
    stamp = json.loads((tmp_path / FINISHED_MARKER).read_text())["finished_at"]
    assert stamp.endswith("+00:00")
    assert [p.name for p in tmp_path.iterdir()] == [FINISHED_MARKER]


def test_atomic_writes_replace_whole_files_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"test_accuracy": 0.97, "epochs_completed": 3})
    assert json.loads(target.read_text()) == {"test_accuracy": 0.97, "epochs_completed": 3}
    write_text_atomic(target, "replaced\n")
    assert target.read_text() == "replaced\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"test_accuracy": 0.5})
    # Fails inside the write, after the temporary file exists.
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "text, not bytes")
    assert json.loads(target.read_text()) == {"test_accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("epoch_record", [None, "history.csv", "backup"])
def test_only_a_finished_epoch_makes_a_directory_an_interrupted_run(tmp_path, epoch_record):
    # A run that failed before its first epoch ended leaves its config.yaml and maybe logs.
    run_dir = tmp_path / "x"
    (run_dir / "tensorboard").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("epochs: 3\n")
    if epoch_record == "history.csv":
        (run_dir / "history.csv").write_text("epoch,loss\n1,1.5\n")
    elif epoch_record == "backup":
        (run_dir / "backup").mkdir()
    run = resolve_run_dir(tmp_path, "x", default_name="unused")
    assert (run.path, run.resume) == (run_dir, epoch_record is not None)

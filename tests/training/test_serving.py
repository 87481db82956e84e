"""A trained run served: its SavedModel signatures, LiteRT and ONNX files, evaluate and predict,
all on real photos (Sign Language Digits JPEGs) from ../shared/datasets.

One small run is trained for the whole module; every exported format is then run in a separate
Python process that imports none of this project's code (tests/training/serving_check.py)."""

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from training import TrainConfig, data, evaluate, export, predict, serving, train

CHECKER = pathlib.Path(__file__).with_name("serving_check.py")
PER_CLASS = {"train": 30, "test": 10}
# Three photos in 7/ are not 100x100: training resized them twice (to the common size, then to
# the input), a served photo once, so they are left out of this exact comparison.
ODD_SIZES = {"IMG_5874.JPG", "IMG_5935.JPG", "IMG_5978.JPG"}
CONVERTERS = {"litert": ["ai_edge_litert"], "onnx": ["tf2onnx", "onnxruntime"]}
MISSING = {
    fmt: [m for m in modules if importlib.util.find_spec(m) is None]
    for fmt, modules in CONVERTERS.items()
}


def needs(name):
    """Skip, naming what to install, when the packages of the format `name` are absent."""
    missing = MISSING.get(name.split("_")[0], [])
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: pip install '.[export]'")


@pytest.fixture(scope="module")
def photos(shared_datasets, tmp_path_factory):
    """A train/ and test/ folder of links to 30 and 10 real photos per class."""
    root = tmp_path_factory.mktemp("sign_language")
    for class_dir in sorted((shared_datasets / "sign_language_digits").iterdir()):
        if not class_dir.is_dir():
            continue
        files = sorted(p for p in class_dir.iterdir() if p.name not in ODD_SIZES)
        start = 0
        for split, count in PER_CLASS.items():
            (root / split / class_dir.name).mkdir(parents=True)
            for photo in files[start : start + count]:
                (root / split / class_dir.name / photo.name).symlink_to(photo)
            start += count
    return root


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory):
    """lenet5 at 32x32 RGB, float32, trained briefly on the photos, with every format exported."""
    config = TrainConfig().replace(
        {
            "epochs": 8,
            "data": {"dataset": str(photos), "image_size": 32, "val_split": 0.1},
            "hardware": {"precision": "float32"},
            "callbacks": {"early_stopping_patience": 0},
            "output": {"output_dir": str(tmp_path_factory.mktemp("runs")), "run_name": "signs"},
        }
    )
    result = train(config)
    formats = [name for name, missing in MISSING.items() if not missing]
    written = (
        export.export_run(result.run_dir, formats=formats, quantize=["none", "float16", "int8"])
        if formats
        else {}
    )
    # The test photos fitted to the input as a served photo is: not rounded to 8 bits, as the
    # trainer stores them (data.stored).
    test = data.fit_to_input(data.load_dataset(photos).test, result.model.input_shape[1:])
    images, labels = zip(*test.as_numpy_iterator())
    pixels, labels = np.stack(images), np.array(labels)
    files = sorted(str(p) for p in (photos / "test").rglob("*.JPG"))
    return {
        "dir": result.run_dir,
        "model": result.model,
        "written": written,
        "pixels": pixels,
        "labels": labels,
        "files": files,
        "metrics": result.metrics,
        "expected": result.model.predict(pixels, verbose=0),
        # What the trainer's test metrics and `evaluate` give the model: 8-bit pixels.
        "evaluated": result.model.predict(np.round(pixels), verbose=0),
    }


@pytest.fixture(scope="module")
def served(run, tmp_path_factory):
    """Every format's probabilities on the test photos, from a process free of project code."""
    work = tmp_path_factory.mktemp("check")
    np.savez(work / "inputs.npz", pixels=run["pixels"], files=np.array(run["files"]))
    saved_model = str(run["dir"] / "serving" / "1")
    jobs = [
        [kind, kind, saved_model]
        for kind in ("saved_model_bytes", "saved_model_uint8", "saved_model_float")
    ]
    jobs += [[name, name.split("_")[0], str(path)] for name, path in run["written"].items()]
    (work / "jobs.json").write_text(json.dumps({"inputs": str(work / "inputs.npz"), "jobs": jobs}))
    result = subprocess.run(
        [sys.executable, str(CHECKER), str(work / "jobs.json")],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output.pop("project_modules") == []
    return {name: np.array(value) for name, value in output.items()}


def test_the_test_photos_are_the_runs_test_split_in_order(run):
    # Folder sources list classes in name order, files sorted within each.
    assert len(run["files"]) == len(run["labels"]) == 100
    assert [int(pathlib.Path(f).parent.name) for f in run["files"]] == run["labels"].tolist()


@pytest.mark.parametrize(
    "name", ["saved_model_bytes", "saved_model_uint8", "saved_model_float", "litert_none", "onnx"]
)
def test_float32_formats_match_the_keras_model(served, run, name):
    needs(name)
    expected = run["expected"]
    assert served[name].shape == expected.shape == (100, 10)
    np.testing.assert_allclose(served[name], expected, atol=1e-4)
    assert np.mean(served[name].argmax(1) == expected.argmax(1)) >= 0.99


@pytest.mark.parametrize(("name", "agreement"), [("litert_float16", 0.99), ("litert_int8", 0.97)])
def test_quantized_litert_agrees_on_the_top_class(served, run, name, agreement):
    needs(name)
    expected = run["expected"]
    assert np.mean(served[name].argmax(1) == expected.argmax(1)) >= agreement
    assert np.abs(served[name] - expected).max() < 0.2  # quantized, yet the same probabilities


def test_the_model_learned_something(run):
    # The agreement tests mean little on a model that guesses: this one is far above 10%.
    assert run["metrics"]["test_accuracy"] >= 0.5


def test_signatures_carry_the_class_names(run):
    import tensorflow as tf

    loaded, names = serving.load(run["dir"])
    assert names == [str(digit) for digit in range(10)]
    outputs = loaded.signatures["serving_bytes"](
        image_bytes=tf.constant([pathlib.Path(f).read_bytes() for f in run["files"][::25]])
    )
    expected = run["expected"][::25].argmax(1)
    assert outputs["class_id"].numpy().tolist() == expected.tolist()
    assert [n.decode() for n in outputs["class_name"].numpy()] == [str(i) for i in expected]


def test_a_gray_photo_is_converted_to_rgb_as_in_training(run, tmp_path):
    import tensorflow as tf

    loaded, _ = serving.load(run["dir"])
    photo = tf.io.decode_jpeg(pathlib.Path(run["files"][0]).read_bytes())
    gray = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(photo, tf.float32))), tf.uint8)
    served = loaded.signatures["serving_default"](image=gray[None])["probabilities"].numpy()
    as_rgb = tf.image.resize(
        tf.cast(tf.image.grayscale_to_rgb(gray), tf.float32), (32, 32), antialias=True
    )
    np.testing.assert_allclose(served, run["model"].predict(as_rgb[None], verbose=0), atol=1e-5)


def test_saved_model_cli_lists_the_three_signatures(run):
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli (installed with tensorflow) is not on PATH")
    result = subprocess.run(
        [cli, "show", "--all", "--dir", str(run["dir"] / "serving" / "1")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for signature in serving.SIGNATURES:
        assert f"signature_def['{signature}']" in result.stdout
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING" in result.stdout
    assert "dtype: DT_UINT8\n        shape: (-1, -1, -1, -1)" in result.stdout
    assert "shape: (-1, 32, 32, 3)" in result.stdout


def test_evaluate_writes_metrics_pictures_and_a_table(run, capsys):
    evaluate.main([str(run["dir"]), "--throughput-seconds", "0.02"])
    out = run["dir"] / "evaluation"
    metrics = json.loads((out / "metrics.json").read_text())
    expected, labels = run["evaluated"], run["labels"]
    assert metrics["num_examples"] == 100
    assert metrics["top1_accuracy"] == pytest.approx(np.mean(expected.argmax(1) == labels))
    assert metrics["top1_accuracy"] == pytest.approx(run["metrics"]["test_accuracy"], abs=1e-6)
    top5 = np.argsort(-expected, axis=1)[:, :5]
    assert metrics["top5_accuracy"] == pytest.approx(np.mean((top5 == labels[:, None]).any(1)))
    loss = -np.mean(np.log(expected[np.arange(100), labels]))
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == 100 and np.trace(matrix) == round(metrics["top1_accuracy"] * 100)
    assert matrix[3].tolist() == np.bincount(expected.argmax(1)[labels == 3], minlength=10).tolist()
    recall = metrics["per_class"]["3"]["recall"]
    assert recall == pytest.approx(np.mean(expected.argmax(1)[labels == 3] == 3))
    assert set(metrics["throughput_images_per_second"]) == {"1", "32", "256"}
    assert all(v > 0 for v in metrics["throughput_images_per_second"].values())
    for picture in ("confusion_matrix.png", "errors.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    printed = capsys.readouterr().out
    assert evaluate.format_table(metrics) in printed
    assert f"top-1 {metrics['top1_accuracy']:.2%}" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == [str(digit) for digit in range(10)]
    assert float(rows[3][2]) == pytest.approx(recall, abs=1e-4)


def test_evaluate_on_another_dataset_with_the_same_classes(run, photos, tmp_path):
    # The test/ folder alone is a dataset of its own: its carved test split is 10 photos.
    metrics = evaluate.evaluate_run(
        run["dir"], dataset=photos / "test", throughput_batches=(1,), throughput_seconds=0.01
    )
    assert metrics["dataset"] == str(photos / "test") and metrics["num_examples"] == 10
    assert sum(row["support"] for row in metrics["per_class"].values()) == 10
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "photo.jpg").symlink_to(run["files"][0])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "photo.jpg").symlink_to(run["files"][-1])
    with pytest.raises(ValueError, match=r"has the classes \['a', 'b'\], the model \['0', '1'"):
        evaluate.evaluate_run(run["dir"], dataset=tmp_path)


def test_predict_reads_photos_through_the_saved_model(run, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    photo = run["files"][0]
    predictions, skipped = predict.predict_files(run["dir"], [photo, broken], top_k=3)
    assert skipped == {str(broken): "not a decodable image (JPEG, PNG, BMP, GIF)"}
    (top,) = predictions.values()
    expected = run["expected"][0]
    assert [name for name, _ in top] == [str(i) for i in np.argsort(-expected)[:3]]
    np.testing.assert_allclose([p for _, p in top], np.sort(expected)[::-1][:3], atol=1e-5)

    predict.main([str(run["dir"]), photo, str(broken), "--top-k", "2", "--json"])
    captured = capsys.readouterr()
    assert f"skipped {broken}" in captured.err
    printed = json.loads(captured.out)
    assert [entry["class_name"] for entry in printed[photo]] == [top[0][0], top[1][0]]


def test_predict_fails_only_when_nothing_could_be_read(run, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but cut short")
    with pytest.raises(SystemExit, match="none of the images could be read"):
        predict.main([str(run["dir"]), str(broken), str(tmp_path / "missing.jpg")])
    assert f"skipped {tmp_path / 'missing.jpg'}: No such file or directory" in (
        capsys.readouterr().err
    )


def test_predict_on_a_folder(run):
    folder = pathlib.Path(run["files"][0]).parent
    predictions, skipped = predict.predict_files(run["dir"], [folder], top_k=1)
    assert not skipped and len(predictions) == 10


def test_int8_without_the_training_data_fails_and_touches_nothing(run, tmp_path):
    copy = tmp_path / "moved-run"
    shutil.copytree(run["dir"], copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["dataset"] = str(tmp_path / "gone")
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}

    with pytest.raises(
        FileNotFoundError,
        match="int8 quantization calibrates on the run's own "
        "training data .*gone.* Nothing was exported",
    ):
        export.export_run(copy, formats=["saved_model", "litert"], quantize=["none", "int8"])
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_export_command_adds_a_new_saved_model_version(run, capsys):
    export.main([str(run["dir"]), "--format", "saved_model"])
    assert serving.versions(run["dir"]) == [1, 2]
    assert "serving/2" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="version 2 is not free"):
        export.main([str(run["dir"]), "--format", "saved_model", "--version", "2"])
    loaded, _ = serving.load(run["dir"])  # the newest, version 2
    probabilities = loaded.signatures["serving_float"](image=run["pixels"][:4])["probabilities"]
    np.testing.assert_allclose(probabilities, run["expected"][:4], atol=1e-5)


def test_commands_refuse_a_directory_without_an_exported_model(tmp_path):
    for command in (evaluate.main, predict.main):
        args = [str(tmp_path)] + (["photo.jpg"] if command is predict.main else [])
        with pytest.raises(
            SystemExit, match="holds no exported SavedModel .*python -m training.run"
        ):
            command(args)
    assert list(tmp_path.iterdir()) == []

"""Export on tiny models: the TF Serving layout, the three signatures, binary models, LiteRT and
ONNX files, atomic replacement and the refusals of `export_run`. Real data: test_serving.py."""

import importlib.util
import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training import TrainConfig, export, rundir, serving
from training.export import export_model

CLASS_NAMES = ["circle", "square", "triangle"]
ARTIFACTS = ["class_names.json", "model.keras", "serving"]


def tiny_model(seed, *, units=3, activation="softmax"):
    """Raw pixels -> Normalization -> conv -> `units` outputs, weights fixed by `seed`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="pixels")
    x = keras.layers.Normalization(
        mean=[120.0, 110.0, 100.0], variance=[3600.0, 2500.0, 1600.0], name="normalize"
    )(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        units, activation=activation, dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"tiny_{seed}")


def raw_pixels(shape, dtype="float32"):
    return np.random.default_rng(0).uniform(0, 255, shape).round().astype(dtype)


def signature(run_dir, name="serving_float", version=1):
    return tf.saved_model.load(str(run_dir / "serving" / str(version))).signatures[name]


def serve(run_dir, pixels):
    return signature(run_dir)(image=tf.constant(pixels))["probabilities"].numpy()


def reload_keras(run_dir, pixels):
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    return model.predict(pixels, verbose=0)


def test_export_writes_the_tf_serving_layout_with_three_signatures(tmp_path):
    model = tiny_model(seed=1)
    pixels = raw_pixels((5, 8, 8, 3))
    expected = model.predict(pixels, verbose=0)

    paths = export_model(model, tmp_path, class_names=CLASS_NAMES)

    assert paths == {
        "model": tmp_path / "model.keras",
        "saved_model": tmp_path / "serving" / "1",
        "class_names": tmp_path / "class_names.json",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ARTIFACTS
    loaded = tf.saved_model.load(str(tmp_path / "serving" / "1"))
    assert sorted(loaded.signatures) == sorted(serving.SIGNATURES)
    inputs = {
        name: loaded.signatures[name].structured_input_signature[1] for name in serving.SIGNATURES
    }
    assert inputs == {
        "serving_default": {"image": tf.TensorSpec((None, None, None, None), tf.uint8, "image")},
        "serving_bytes": {"image_bytes": tf.TensorSpec((None,), tf.string, "image_bytes")},
        "serving_float": {"image": tf.TensorSpec((None, 8, 8, 3), tf.float32, "image")},
    }
    for name in serving.SIGNATURES:
        assert loaded.signatures[name].structured_outputs == {
            "probabilities": tf.TensorSpec((None, 3), tf.float32, "probabilities"),
            "class_id": tf.TensorSpec((None,), tf.int64, "class_id"),
            "class_name": tf.TensorSpec((None,), tf.string, "class_name"),
        }
    outputs = loaded.signatures["serving_float"](image=tf.constant(pixels))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    assert outputs["class_id"].numpy().tolist() == expected.argmax(1).tolist()
    assert [n.decode() for n in outputs["class_name"].numpy()] == [
        CLASS_NAMES[i] for i in expected.argmax(1)
    ]
    assert [n.decode() for n in loaded.class_names[0].numpy()] == CLASS_NAMES
    np.testing.assert_array_equal(reload_keras(tmp_path, pixels), expected)
    assert json.loads((tmp_path / "class_names.json").read_text()) == CLASS_NAMES


def fit_like_training(images, fit):
    """What training.data.fit_to_input does to images of another size than the 8x8 input."""
    images = tf.cast(images, tf.float32)
    if fit == "resize":
        return tf.image.resize(images, (8, 8), antialias=True)
    return tf.image.resize_with_crop_or_pad(images, 8, 8)


@pytest.mark.parametrize("fit", ["resize", "pad"])
def test_uint8_and_bytes_signatures_fit_any_size_as_training_does(tmp_path, fit):
    model = tiny_model(seed=1)
    export_model(model, tmp_path, class_names=CLASS_NAMES, fit=fit)
    photos = raw_pixels((2, 13, 6, 3), "uint8")
    expected = model.predict(fit_like_training(photos, fit), verbose=0)

    served = signature(tmp_path, "serving_default")(image=tf.constant(photos))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    # PNG is lossless: the bytes signature sees the same pixels; a gray file becomes RGB.
    files = [tf.io.encode_png(photo).numpy() for photo in photos]
    gray = photos[:1, ..., :1]
    files.append(tf.io.encode_png(gray[0]).numpy())
    served = signature(tmp_path, "serving_bytes")(image_bytes=tf.constant(files))
    np.testing.assert_allclose(served["probabilities"].numpy()[:2], expected, atol=1e-5)
    gray_expected = model.predict(fit_like_training(np.repeat(gray, 3, -1), fit), verbose=0)
    np.testing.assert_allclose(served["probabilities"].numpy()[2:], gray_expected, atol=1e-5)


def test_a_binary_model_serves_two_class_probabilities(tmp_path):
    model = tiny_model(seed=4, units=1, activation="sigmoid")
    pixels = raw_pixels((6, 8, 8, 3))
    p = model.predict(pixels, verbose=0)[:, 0]
    export_model(model, tmp_path, class_names=["cat", "dog"])

    outputs = signature(tmp_path)(image=tf.constant(pixels))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), np.stack([1 - p, p], 1), atol=1e-6)
    assert outputs["class_id"].numpy().tolist() == (p > 0.5).astype(int).tolist()
    assert [n.decode() for n in outputs["class_name"].numpy()] == [
        "dog" if x > 0.5 else "cat" for x in p
    ]
    with pytest.raises(ValueError, match="class_names has 3 names but the model outputs 2"):
        export_model(model, tmp_path, class_names=CLASS_NAMES)


def test_second_export_replaces_the_first_whole(tmp_path):
    pixels = raw_pixels((2, 8, 8, 3))
    export_model(tiny_model(seed=1), tmp_path, class_names=CLASS_NAMES)
    second = tiny_model(seed=2)
    export_model(second, tmp_path, class_names=["a", "b", "c"])

    expected = second.predict(pixels, verbose=0)
    np.testing.assert_allclose(serve(tmp_path, pixels), expected, atol=1e-5)
    np.testing.assert_array_equal(reload_keras(tmp_path, pixels), expected)
    assert json.loads((tmp_path / "class_names.json").read_text()) == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ARTIFACTS
    assert [p.name for p in (tmp_path / "serving").iterdir()] == ["1"]


def fail_halfway_through_the_saved_model(monkeypatch):
    # The call at the bottom of Keras' ExportArchive.write_out that writes the files.
    def write_part_then_fail(obj, export_dir, *args, **kwargs):
        path = pathlib.Path(export_dir)
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"half of a graph")
        raise RuntimeError("killed while writing the SavedModel")

    monkeypatch.setattr(tf.saved_model, "save", write_part_then_fail)


def test_failed_export_leaves_the_previous_export_intact(tmp_path, monkeypatch):
    first = tiny_model(seed=1)
    pixels = raw_pixels((2, 8, 8, 3))
    expected = first.predict(pixels, verbose=0)
    export_model(first, tmp_path, class_names=CLASS_NAMES)

    fail_halfway_through_the_saved_model(monkeypatch)
    with pytest.raises(RuntimeError, match="killed while writing"):
        export_model(tiny_model(seed=2), tmp_path, class_names=["a", "b", "c"])

    # Every artifact is still the first model's, and no temporary directory is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ARTIFACTS
    np.testing.assert_allclose(serve(tmp_path, pixels), expected, atol=1e-5)
    np.testing.assert_array_equal(reload_keras(tmp_path, pixels), expected)
    assert json.loads((tmp_path / "class_names.json").read_text()) == CLASS_NAMES


def test_failed_first_export_leaves_nothing(tmp_path, monkeypatch):
    fail_halfway_through_the_saved_model(monkeypatch)
    with pytest.raises(RuntimeError, match="killed while writing"):
        export_model(tiny_model(seed=1), tmp_path, class_names=CLASS_NAMES)
    assert list(tmp_path.iterdir()) == []


def test_staging_left_by_a_killed_export_is_cleared(tmp_path):
    (tmp_path / ".export-killed" / "saved_model").mkdir(parents=True)
    (tmp_path / ".export-killed" / "saved_model" / "saved_model.pb").write_bytes(b"half")
    export_model(tiny_model(seed=1), tmp_path, class_names=CLASS_NAMES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ARTIFACTS


def test_mixed_bfloat16_zoo_model_exports_with_float32_outputs(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 1), name="pixels")
    x = keras.layers.Normalization(mean=[33.0], variance=[6000.0], name="normalize")(inputs)
    outputs = zoo.create("lenet5", input_shape=(32, 32, 1), num_classes=10)(x)
    model = keras.Model(inputs, outputs)
    pixels = raw_pixels((3, 32, 32, 1))
    expected = model.predict(pixels, verbose=0)

    export_model(model, tmp_path, class_names=[str(digit) for digit in range(10)])

    served = serve(tmp_path, pixels)
    assert served.dtype == np.float32 and served.shape == (3, 10)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(reload_keras(tmp_path, pixels), expected)
    # LiteRT and ONNX get a float32 copy: the same weights, float32 arithmetic.
    copy = export.float32_copy(model)
    assert {layer.dtype_policy.name for layer in copy._flatten_layers()} == {"float32"}
    np.testing.assert_allclose(copy.predict(pixels, verbose=0), expected, atol=0.02)


def test_bad_arguments_are_refused(tmp_path):
    model = tiny_model(seed=1)
    with pytest.raises(ValueError, match="class_names has 2 names but the model outputs 3"):
        export_model(model, tmp_path, class_names=["a", "b"])
    with pytest.raises(ValueError, match="is not an existing directory"):
        export_model(model, tmp_path / "missing", class_names=CLASS_NAMES)
    assert list(tmp_path.iterdir()) == []


def finished_run(path, model, class_names):
    """A run directory as the trainer leaves it, around `model`."""
    path.mkdir()
    export_model(model, path, class_names=class_names)
    rundir.write_text_atomic(path / "config.yaml", TrainConfig().to_yaml())
    rundir.mark_finished(path)
    return path


def test_export_run_refuses_before_touching_anything(tmp_path, monkeypatch):
    run = finished_run(tmp_path / "run", tiny_model(seed=1), CLASS_NAMES)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="Unknown export format 'tflite'.*saved_model, litert"):
        export.export_run(run, formats=["tflite"])
    with pytest.raises(ValueError, match="Unknown quantization 'int4'.*none, float16, int8"):
        export.export_run(run, formats=["litert"], quantize=["int4"])
    with pytest.raises(ValueError, match="version 1 is not free .*holds \\[1\\]"):
        export.export_run(run, formats=["saved_model"], version=1)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "tf2onnx" else find_spec(name, *args),
    )
    with pytest.raises(ValueError, match="ONNX export needs tf2onnx.*pip install"):
        export.export_run(run, formats=["saved_model", "onnx"])
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    (run / rundir.FINISHED_MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="holds no finished model .*python -m training.run"):
        export.export_run(run, formats=["onnx"])
    assert sorted(p.name for p in run.iterdir()) == [
        "class_names.json",
        "config.yaml",
        "model.keras",
        "serving",
    ]
    with pytest.raises(SystemExit, match="holds no finished model"):
        export.main([str(run), "--format", "onnx"])


def test_litert_and_onnx_of_a_binary_model_return_two_class_probabilities(tmp_path):
    # Multi-class LiteRT and ONNX on real photos: test_serving.py.
    for module in ("ai_edge_litert", "tf2onnx", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install '.[export]'")
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    model = tiny_model(seed=5, units=1, activation="sigmoid")
    run = finished_run(tmp_path / "run", model, ["cat", "dog"])
    written = export.export_run(run, formats=["litert", "onnx"], quantize=["none", "float16"])
    assert written == {
        "litert_none": run / "model.tflite",
        "litert_float16": run / "model_float16.tflite",
        "onnx": run / "model.onnx",
    }
    pixels = raw_pixels((4, 8, 8, 3))
    expected = signature(run)(image=tf.constant(pixels))["probabilities"].numpy()
    p = model.predict(pixels, verbose=0)
    np.testing.assert_allclose(expected, np.concatenate([1 - p, p], 1), atol=1e-6)

    session = onnxruntime.InferenceSession(str(run / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["image"]
    np.testing.assert_allclose(
        session.run(["probabilities"], {"image": pixels})[0], expected, atol=1e-5
    )
    for name, tolerance in (("model.tflite", 1e-5), ("model_float16.tflite", 2e-3)):
        interpreter = Interpreter(model_path=str(run / name))
        (image,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
        interpreter.resize_tensor_input(image["index"], pixels.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(image["index"], pixels)
        interpreter.invoke()
        np.testing.assert_allclose(
            interpreter.get_tensor(output["index"]), expected, atol=tolerance
        )

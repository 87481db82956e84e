import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.export import export_model

CLASS_NAMES = ["circle", "square", "triangle"]


def tiny_model(seed):
    """Raw pixels -> Normalization -> conv -> softmax over 3 classes, weights fixed by `seed`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="pixels")
    x = keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 2500.0, 1600.0],
                                   name="normalize")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"tiny_{seed}")


def raw_pixels(shape):
    return np.random.default_rng(0).uniform(0, 255, shape).astype("float32")


def serve(run_dir, pixels):
    signature = tf.saved_model.load(str(run_dir / "saved_model")).signatures["serving_default"]
    return signature(image=tf.constant(pixels))["probabilities"].numpy()


def reload_keras(run_dir, pixels):
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    return model.predict(pixels, verbose=0)


def test_export_writes_servable_artifacts_that_match_the_model(tmp_path):
    model = tiny_model(seed=1)
    pixels = raw_pixels((5, 8, 8, 3))
    expected = model.predict(pixels, verbose=0)

    paths = export_model(model, tmp_path, class_names=CLASS_NAMES)

    assert paths == {"model": tmp_path / "model.keras", "saved_model": tmp_path / "saved_model",
                     "class_names": tmp_path / "class_names.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class_names.json", "model.keras",
                                                          "saved_model"]
    signature = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    assert signature.structured_input_signature[1] == {
        "image": tf.TensorSpec((None, 8, 8, 3), tf.float32, name="image")}
    assert signature.structured_outputs == {
        "probabilities": tf.TensorSpec((None, 3), tf.float32, name="probabilities")}
    np.testing.assert_allclose(serve(tmp_path, pixels), expected, atol=1e-5)
    np.testing.assert_array_equal(reload_keras(tmp_path, pixels), expected)
    assert json.loads((tmp_path / "class_names.json").read_text()) == CLASS_NAMES


def test_second_export_replaces_the_first_whole(tmp_path):
    pixels = raw_pixels((2, 8, 8, 3))
    export_model(tiny_model(seed=1), tmp_path, class_names=CLASS_NAMES)
    second = tiny_model(seed=2)
    export_model(second, tmp_path, class_names=["a", "b", "c"])

    expected = second.predict(pixels, verbose=0)
    np.testing.assert_allclose(serve(tmp_path, pixels), expected, atol=1e-5)
    np.testing.assert_array_equal(reload_keras(tmp_path, pixels), expected)
    assert json.loads((tmp_path / "class_names.json").read_text()) == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class_names.json", "model.keras",
                                                          "saved_model"]


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class_names.json", "model.keras",
                                                          "saved_model"]
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class_names.json", "model.keras",
                                                          "saved_model"]


def test_mixed_bfloat16_zoo_model_exports_with_a_float32_signature(tmp_path):
    zoo = pytest.importorskip("zoo")
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


def test_bad_arguments_are_refused(tmp_path):
    model = tiny_model(seed=1)
    with pytest.raises(ValueError, match="class_names has 2 names but the model outputs 3"):
        export_model(model, tmp_path, class_names=["a", "b"])
    with pytest.raises(ValueError, match="is not an existing directory"):
        export_model(model, tmp_path / "missing", class_names=CLASS_NAMES)
    assert list(tmp_path.iterdir()) == []

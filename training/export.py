"""Export a trained model: `model.keras`, `class_names.json`, a servable SavedModel, LiteRT, ONNX.

A run's SavedModel lands in `RUN_DIR/serving/<version>/` (version 1 from training), the layout
TF Serving reads: `tensorflow_model_server --model_base_path=<abs RUN_DIR>/serving`. Its three
signatures are described in `training.serving`.

`python -m training.export RUN_DIR --format litert --quantize int8` adds further formats beside
it: `model.tflite`, `model_float16.tflite`, `model_int8.tflite`, `model.onnx`. Each takes one
input, float32 raw 0..255 pixels [N, H, W, C] at the model's input size (the normalization is
inside), and returns the float32 class probabilities.

Everything is written into a staging directory inside the run directory first and then moved
into place with `os.replace`, so a failure or a kill leaves either the previous complete
artifact or none, never a half-written one.
"""

import contextlib
import importlib.util
import json
import os
import pathlib
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
import yaml

import zoo  # noqa: F401  registers the zoo's layers and activations that model.keras names
from training import checks, rundir, serving

MODEL_FILE = "model.keras"
CLASS_NAMES_FILE = "class_names.json"
STAGING_PREFIX = ".export-"
FORMATS = ("saved_model", "litert", "onnx")
QUANTIZATIONS = ("none", "float16", "int8")
LITERT_FILES = {
    "none": "model.tflite",
    "float16": "model_float16.tflite",
    "int8": "model_int8.tflite",
}
ONNX_FILE = "model.onnx"
# Images of the run's training split that calibrate int8 ranges (the converter's guidance is
# a few hundred).
REPRESENTATIVE_IMAGES = 200


def export_model(model, run_dir, *, class_names, fit="resize", version=1):
    """The trainer's export into the existing `run_dir`: model.keras, class_names.json and the
    SavedModel `serving/<version>/`, replacing earlier ones whole; returns their paths."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir {str(run_dir)!r} is not an existing directory")
    class_names = _check_class_names(model, class_names)
    saved_model = run_dir / serving.SERVING_DIR / str(version)
    with _staging(run_dir) as staging:
        model.save(staging / MODEL_FILE)
        export_saved_model(model, staging / "saved_model", class_names=class_names, fit=fit)
        (staging / CLASS_NAMES_FILE).write_text(json.dumps(class_names, indent=2) + "\n")

        os.replace(staging / MODEL_FILE, run_dir / MODEL_FILE)
        os.replace(staging / CLASS_NAMES_FILE, run_dir / CLASS_NAMES_FILE)
        saved_model.parent.mkdir(exist_ok=True)
        _replace_directory(staging / "saved_model", saved_model, trash=staging)
    return {
        "model": run_dir / MODEL_FILE,
        "saved_model": saved_model,
        "class_names": run_dir / CLASS_NAMES_FILE,
    }


def export_saved_model(model, path, *, class_names, fit):
    """A SavedModel at `path` with the three signatures of `training.serving`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (function, input_signature) in serving.signatures(
        model, list(class_names), fit=fit
    ).items():
        archive.add_endpoint(name=name, fn=function, input_signature=input_signature)
    archive.add_variable_collection(
        "class_names", [tf.Variable(list(class_names), trainable=False, name="class_names")]
    )
    archive.write_out(str(path), verbose=False)


def export_litert(model, path, *, quantize="none", representative_images=None):
    """`model` as a LiteRT flatbuffer, through Keras' own exporter (TFLiteConverter underneath).

    int8 is full-integer (only int8 kernels) with float32 input and output, calibrated on
    `representative_images` (float32 raw pixels at the input size)."""
    checks.one_of("quantization", quantize, QUANTIZATIONS)
    options = {}
    if quantize == "float16":
        options = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "target_spec": {"supported_types": [tf.float16]},
        }
    elif quantize == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("int8 quantization needs representative_images to calibrate on")

        def representative_dataset():
            for image in representative_images:
                yield [image[None].astype(np.float32)]

        options = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": representative_dataset,
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        }
    model.export(
        str(path), format="litert", input_signature=[_pixels_spec(model)], verbose=False, **options
    )


def export_onnx(model, path, *, opset=None):
    """`model` as ONNX with one input, `image`, and one output, `probabilities`.

    Not `model.export(format="onnx")`: with Keras 3.15 and tf2onnx 1.17 that turns the
    Normalization layer's mean and variance (captured constants) into two extra graph inputs.
    Freezing the function first makes them constants of the graph."""
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    function = tf.function(lambda image: model(image, training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(_pixels_spec(model)))
    (image,), (probabilities,) = frozen.inputs, frozen.outputs
    tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=[image.name],
        output_names=[probabilities.name],
        tensors_to_rename={image.name: "image", probabilities.name: "probabilities"},
        opset=opset,
        output_path=str(path),
    )


def export_run(run_dir, *, formats=("saved_model",), quantize=("none",), version=None):
    """Export a finished run's model.keras in more formats, beside what is already there.

    `formats` from FORMATS; `quantize` (LiteRT only) from QUANTIZATIONS; `version` the new
    SavedModel version (default: one above the newest). Everything is checked, and the int8
    calibration data read, before any file is written; existing files are never replaced
    except LiteRT/ONNX files of the same name, each in one step. Returns {artifact: path}.
    """
    run_dir = pathlib.Path(run_dir)
    formats, quantize = list(dict.fromkeys(formats)), list(dict.fromkeys(quantize))
    for name in formats:
        checks.one_of("export format", name, FORMATS)
    for name in quantize:
        checks.one_of("quantization", name, QUANTIZATIONS)
    if not formats:
        raise ValueError(f"give at least one format: {', '.join(FORMATS)}")
    if "onnx" in formats and importlib.util.find_spec("tf2onnx") is None:
        raise ValueError(
            "ONNX export needs tf2onnx, which is not installed: "
            "pip install -e '.[export]' (or pip install tf2onnx)"
        )
    model_path = run_dir / MODEL_FILE
    if not (rundir.is_finished(run_dir) and model_path.is_file()):
        raise FileNotFoundError(
            f"{run_dir} holds no finished model ({MODEL_FILE} and the {rundir.FINISHED_MARKER} "
            f"marker): train it with python -m training.run, or run its training command again "
            f"to finish an interrupted run"
        )
    if "saved_model" in formats:
        existing = serving.versions(run_dir)
        version = (existing[-1] + 1 if existing else 1) if version is None else int(version)
        if version < 1 or version in existing:
            raise ValueError(
                f"SavedModel version {version} is not free in {run_dir / serving.SERVING_DIR} "
                f"(it holds {existing or 'none'}): choose a --version above 0 that is not taken"
            )
    config = load_run_config(run_dir)
    model = keras.saving.load_model(model_path, compile=False)
    class_names = json.loads((run_dir / CLASS_NAMES_FILE).read_text())
    portable = portable_model(model) if {"litert", "onnx"} & set(formats) else None
    representative = None
    if "litert" in formats and "int8" in quantize:
        representative = representative_images(config)

    written = {}
    with _staging(run_dir) as staging:
        if "saved_model" in formats:
            target = run_dir / serving.SERVING_DIR / str(version)
            export_saved_model(
                model, staging / "saved_model", class_names=class_names, fit=config.data.fit
            )
            target.parent.mkdir(exist_ok=True)
            os.replace(staging / "saved_model", target)
            written["saved_model"] = target
        if "litert" in formats:
            for name in quantize:
                export_litert(
                    portable,
                    staging / LITERT_FILES[name],
                    quantize=name,
                    representative_images=representative,
                )
                os.replace(staging / LITERT_FILES[name], run_dir / LITERT_FILES[name])
                written[f"litert_{name}"] = run_dir / LITERT_FILES[name]
        if "onnx" in formats:
            export_onnx(portable, staging / ONNX_FILE)
            os.replace(staging / ONNX_FILE, run_dir / ONNX_FILE)
            written["onnx"] = run_dir / ONNX_FILE
    return written


def portable_model(model):
    """The model LiteRT and ONNX files hold: float32 [N, K] probabilities out, a single sigmoid
    unit p as [1 - p, p] (as the SavedModel serves it), every layer computing in float32."""
    model = float32_copy(model)
    if model.outputs[0].shape[-1] != 1:
        return model
    probability = model.outputs[0]
    return keras.Model(
        model.inputs, keras.ops.concatenate([1.0 - probability, probability], -1), name=model.name
    )


def float32_copy(model):
    """`model` with every layer computing in float32 (the same weights), or `model` itself when
    it already does: the ONNX converter requires float32, LiteRT runtimes lack bfloat16."""
    if all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers()):
        return model

    def float32_policies(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: float32_policies(value) for key, value in node.items()}
        if isinstance(node, list):
            return [float32_policies(value) for value in node]
        return node

    config = float32_policies(keras.saving.serialize_keras_object(model))
    # Layers that name no policy take the global one: float32 too, while the copy is built.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = keras.saving.deserialize_keras_object(config)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def load_run_config(run_dir):
    """The resolved TrainConfig a run saved as config.yaml."""
    from training.config import from_dict

    path = pathlib.Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.yaml: is it a run directory?")
    return from_dict(yaml.safe_load(path.read_text()))


def representative_images(config, count=REPRESENTATIVE_IMAGES):
    """The first `count` training images of a run, fitted to its input as in training."""
    from training import trainer  # the trainer imports this module

    try:
        prepared = trainer.prepare_data(config, include_test=False)
    except (ValueError, OSError, ConnectionError) as error:
        raise FileNotFoundError(
            f"int8 quantization calibrates on the run's own training data "
            f"(dataset {config.data.dataset!r} in its config.yaml), which cannot be read: "
            f"{error} Put the data back where config.yaml says, or export without int8 "
            f"(--quantize none or float16). Nothing was exported."
        ) from None
    images = [image for image, _ in prepared.train.take(count).as_numpy_iterator()]
    return np.stack(images).astype(np.float32)


def _pixels_spec(model):
    return tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="image")


def _check_class_names(model, class_names):
    class_names = [str(name) for name in class_names]
    classes = serving.num_classes(model)
    if len(class_names) != classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but the model outputs {classes} classes"
        )
    return class_names


@contextlib.contextmanager
def _staging(run_dir):
    """A fresh staging directory in `run_dir`, deleted on exit with whatever is left in it."""
    # A run killed during an earlier export left its staging directory: nothing of value.
    for stale in run_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=run_dir, prefix=STAGING_PREFIX))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_directory(new, target, *, trash):
    # Directories cannot be swapped in one step: move the old one into `trash` (deleted by the
    # caller), then move the new one in. Between the two renames there is no directory at all,
    # which is safe: never a mix of old and new files.
    if target.exists():
        os.replace(target, trash / f"old-{target.name}")
    os.replace(new, target)


def main(argv=None):
    """`python -m training.export RUN_DIR --format ... [--quantize ...] [--version N]`."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export a finished run's model as a new SavedModel version, LiteRT or ONNX.",
    )
    parser.add_argument("run_dir", help="a finished run directory (holds model.keras)")
    parser.add_argument(
        "--format",
        action="append",
        dest="formats",
        choices=FORMATS,
        required=True,
        help="repeatable: saved_model, litert, onnx",
    )
    parser.add_argument(
        "--quantize",
        action="append",
        choices=QUANTIZATIONS,
        help="LiteRT only, repeatable (default none): none, float16, int8",
    )
    parser.add_argument(
        "--version", type=int, help="the new SavedModel version (default: one above the newest)"
    )
    args = parser.parse_args(argv)
    try:
        written = export_run(
            args.run_dir,
            formats=args.formats,
            quantize=args.quantize or ["none"],
            version=args.version,
        )
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    for name, path in written.items():
        size = (
            sum(p.stat().st_size for p in pathlib.Path(path).rglob("*"))
            if path.is_dir()
            else path.stat().st_size
        )
        print(f"{name:16} {path}  ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

"""Export a trained model: `model.keras`, a servable `saved_model/` and `class_names.json`.

Everything is written first into a staging directory inside the run directory and then moved
into place, each file with one `os.replace` and `saved_model/` by renaming the old one away and
the new one in. A failure or a kill therefore leaves either the previous complete export or none
of a given artifact, never a half-written one.

The SavedModel's `serving_default` signature takes `image`: float32 [None, H, W, C] raw pixels
(0..255; the model normalizes them itself) and returns `probabilities`: float32 [None, classes]
([None, 1], the probability of the second class, for a binary model).

    reloaded = tf.saved_model.load("saved_models/lenet5-digits/saved_model")
    reloaded.signatures["serving_default"](image=pixels)["probabilities"]
"""

import json
import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
CLASS_NAMES_FILE = "class_names.json"
SIGNATURE_INPUT = "image"
SIGNATURE_OUTPUT = "probabilities"
STAGING_PREFIX = ".export-"


def export_model(model, run_dir, *, class_names):
    """Write the model's three artifacts into the existing `run_dir`; returns their paths."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir {str(run_dir)!r} is not an existing directory")
    class_names = [str(name) for name in class_names]
    outputs = model.outputs[0].shape[-1]
    # A binary model has one sigmoid unit, the probability of class_names[1].
    num_classes = 2 if outputs == 1 else outputs
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but the model outputs {num_classes} classes"
        )
    # A run killed during an earlier export left its staging directory; it holds nothing of value.
    for stale in run_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=run_dir, prefix=STAGING_PREFIX))
    try:
        model.save(staging / MODEL_FILE)
        _export_saved_model(model, staging / SAVED_MODEL_DIR)
        (staging / CLASS_NAMES_FILE).write_text(json.dumps(class_names, indent=2) + "\n")

        os.replace(staging / MODEL_FILE, run_dir / MODEL_FILE)
        os.replace(staging / CLASS_NAMES_FILE, run_dir / CLASS_NAMES_FILE)
        _replace_directory(staging / SAVED_MODEL_DIR, run_dir / SAVED_MODEL_DIR, trash=staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "model": run_dir / MODEL_FILE,
        "saved_model": run_dir / SAVED_MODEL_DIR,
        "class_names": run_dir / CLASS_NAMES_FILE,
    }


def _export_saved_model(model, path):
    input_shape = tuple(model.inputs[0].shape)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image):
        # Under a mixed precision policy the outputs may be float16/bfloat16; serving is float32.
        return {SIGNATURE_OUTPUT: keras.ops.cast(model(image, training=False), "float32")}

    # The first endpoint becomes `serving_default`; the TensorSpec name names its input.
    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[tf.TensorSpec(input_shape, tf.float32, name=SIGNATURE_INPUT)],
    )
    archive.write_out(str(path), verbose=False)


def _replace_directory(new, target, *, trash):
    # Directories cannot be swapped in one step: move the old one into `trash` (deleted by the
    # caller), then move the new one in. Between the two renames there is no directory at all,
    # which is safe: never a mix of old and new files.
    if target.exists():
        os.replace(target, trash / f"old-{target.name}")
    os.replace(new, target)

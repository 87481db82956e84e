"""The three signatures of an exported SavedModel, and finding and loading it again.

    serving_default  image        uint8   [None, None, None, C]  any size; C = 1, 3 or 4
    serving_bytes    image_bytes  string  [None]                 encoded JPEG/PNG/BMP/GIF files
    serving_float    image        float32 [None, H, W, C]        raw 0..255 pixels at the input size

Each returns `probabilities` float32 [None, K], `class_id` int64 [None] and `class_name` string
[None]. Images are decoded, converted to the model's channels and fitted to its input with the
very functions the trainer applied to its data (`training.data`), so served and training
pixels agree. The class names also travel as the variable collection `class_names`.
"""

import pathlib

import tensorflow as tf

from training import data

SERVING_DIR = "serving"
SIGNATURES = ("serving_default", "serving_bytes", "serving_float")
OUTPUTS = ("probabilities", "class_id", "class_name")


def num_classes(model):
    """The classes a model tells apart: a single (sigmoid) output unit means two."""
    units = model.outputs[0].shape[-1]
    return 2 if units == 1 else units


def class_probabilities(outputs):
    """Model outputs as float32 [N, K] probabilities; one sigmoid unit p becomes [1 - p, p]."""
    # Under a mixed precision policy the outputs may be float16/bfloat16; serving is float32.
    outputs = tf.cast(outputs, tf.float32)
    if outputs.shape[-1] == 1:
        return tf.concat([1.0 - outputs, outputs], axis=-1)
    return outputs


def signatures(model, class_names, *, fit):
    """{signature name: (function, input_signature)} for keras.export.ExportArchive."""
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    channels = input_shape[-1]

    def outputs(pixels):
        probabilities = class_probabilities(model(pixels, training=False))
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(tf.constant(class_names), class_id),
        }

    def fitted(images):
        # to_channels decides gray or colour at run time; the model needs the count statically.
        images = tf.ensure_shape(data.to_channels(images, channels), [*images.shape[:-1], channels])
        return data.fit_images(images, input_shape, method=fit)

    def serve_images(image):
        return outputs(fitted(image))

    def serve_bytes(image_bytes):
        pixels = tf.map_fn(
            lambda contents: fitted(data.decode_image(contents)),
            image_bytes,
            fn_output_signature=tf.TensorSpec(input_shape, tf.float32),
        )
        return outputs(pixels)

    def serve_float(image):
        return outputs(image)

    return {
        "serving_default": (
            serve_images,
            [tf.TensorSpec((None, None, None, None), tf.uint8, name="image")],
        ),
        "serving_bytes": (serve_bytes, [tf.TensorSpec((None,), tf.string, name="image_bytes")]),
        "serving_float": (
            serve_float,
            [tf.TensorSpec((None, *input_shape), tf.float32, name="image")],
        ),
    }


def versions(run_dir):
    """The SavedModel versions under RUN_DIR/serving/, ascending."""
    serving = pathlib.Path(run_dir) / SERVING_DIR
    if not serving.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in serving.iterdir()
        if p.name.isdigit() and (p / "saved_model.pb").is_file()
    )


def saved_model_path(run_dir, version=None):
    """RUN_DIR/serving/<version>/, the newest when `version` is None; refuses a missing one."""
    found = versions(run_dir)
    if not found:
        raise FileNotFoundError(
            f"{run_dir} holds no exported SavedModel ({SERVING_DIR}/<version>/saved_model.pb): "
            f"train a model with python -m training.run, or export one with "
            f"python -m training.export {run_dir} --format saved_model"
        )
    if version is None:
        version = found[-1]
    if version not in found:
        raise FileNotFoundError(
            f"{run_dir} has no SavedModel version {version}; it has {', '.join(map(str, found))}"
        )
    return pathlib.Path(run_dir) / SERVING_DIR / str(version)


def load(run_dir, version=None):
    """The exported SavedModel (newest version by default) and its class names."""
    loaded = tf.saved_model.load(str(saved_model_path(run_dir, version)))
    names = [name.decode() for name in loaded.class_names[0].numpy()]
    return loaded, names

"""Loading weights into zoo models: from files, and from keras.applications ("imagenet")."""

import inspect
import os

import numpy as np

WIDTH_KNOBS = ("alpha", "depth_multiplier")


def weighted_layers(model):
    return [layer for layer in model.layers if layer.weights]


def copy_weights(source, target):
    """Copy every weight of `source` into `target`, pairing layers that hold weights in order.

    The two models must have the same architecture (layer types and order); a kernel whose shape
    differs only by size-1 axes (a 1x1 Conv2D classifier versus a Dense one) is reshaped.
    """
    source_layers, target_layers = weighted_layers(source), weighted_layers(target)
    if len(source_layers) != len(target_layers):
        raise ValueError(
            f"Cannot copy weights: {source.name} has {len(source_layers)} layers with weights, "
            f"{target.name} has {len(target_layers)}."
        )
    for src, dst in zip(source_layers, target_layers):
        values = src.get_weights()
        shapes = [tuple(w.shape) for w in dst.weights]
        if len(values) != len(shapes) or any(
            v.size != int(np.prod(s)) for v, s in zip(values, shapes)
        ):
            raise ValueError(
                f"Cannot copy weights from layer {src.name} {[v.shape for v in values]} "
                f"to layer {dst.name} {shapes}: the architectures differ."
            )
        dst.set_weights([v.reshape(s) for v, s in zip(values, shapes)])


def keras_cache_dir():
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models")


def load_into(model, weights, info, build_kwargs):
    """Load `weights` (a path, or "imagenet") into a freshly built zoo `model`."""
    if weights != "imagenet":
        model.load_weights(weights)
        return
    include_top = build_kwargs.get("include_top", True)
    num_classes = build_kwargs.get("num_classes", 1000)
    if include_top and num_classes != 1000:
        raise ValueError(
            f"{info.name}: ImageNet weights with include_top=True need num_classes=1000 "
            f"(got {num_classes}); use include_top=False for a new classifier."
        )
    if model.input_shape[-1] != 3:
        raise ValueError(f"{info.name}: ImageNet weights need 3 input channels.")
    # The width knobs pick the weights file (MobileNet at alpha 0.5 has its own); keras.applications
    # refuses, with its own message, a value it has no weights for.
    knobs = {
        key: build_kwargs[key]
        for key in WIDTH_KNOBS
        if key in build_kwargs and key in inspect.signature(info.keras_application).parameters
    }
    try:
        reference = info.keras_application(
            include_top=include_top,
            weights="imagenet",
            input_shape=model.input_shape[1:],
            **knobs,
        )
    except ValueError:
        raise
    except Exception as error:  # keras reports a failed download as a bare Exception
        raise RuntimeError(
            f"{info.name}: could not load ImageNet weights through keras.applications. Keras "
            f"looks for its weight files in {keras_cache_dir()} (set KERAS_HOME to move it) "
            f"and downloads them when they are missing, which needs network access. Copy the "
            f"file there to work offline. Cause: {error}"
        ) from error
    copy_weights(reference, model)

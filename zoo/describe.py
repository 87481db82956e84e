"""`describe(name)`: a model's size, cost and provenance, computed from the built model."""

import math

from zoo.flops import count_flops
from zoo.registry import model_info


def trainable_param_count(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def describe(name, **build_kwargs):
    """Build `name` (at its default input unless `input_shape` is given) and describe it."""
    info = model_info(name)
    model = info.builder(**build_kwargs)
    return {
        "name": name,
        "params": model.count_params(),
        "trainable_params": trainable_param_count(model),
        "flops": count_flops(model),
        "input_shape": tuple(model.input_shape[1:]),
        "default_input_shape": info.default_input_shape,
        "min_input_shape": (info.min_input_size, info.min_input_size, 1),
        "paper": info.paper,
    }

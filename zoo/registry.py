"""The model registry: every zoo builder is registered here under its name.

`register_model` wraps a family's builder so that the parts every builder shares are done in one
place: the input shape is defaulted and validated, and `weights` are loaded after the build.
"""

import dataclasses
import difflib
import fnmatch
import functools
import os
from typing import Callable, Optional

_REGISTRY: dict = {}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable
    default_input_shape: tuple
    min_input_size: int
    paper: str
    # A keras.applications constructor with the same architecture, for weights="imagenet".
    keras_application: Optional[Callable] = None


def register_model(*, default_input_shape, min_input_size, paper, keras_application=None):
    """Register a builder `fn(input_shape, *, num_classes, include_top, ..., **family_kwargs)`.

    The registered name is the function's name. The wrapper resolves `input_shape=None` to the
    default, rejects shapes below `min_input_size` with a message naming the minimum, and loads
    `weights` (None, a `.weights.h5`/`.keras` path, or "imagenet") once the model is built.
    """

    def decorate(builder):
        name = builder.__name__

        @functools.wraps(builder)
        def build(input_shape=None, *, weights=None, **kwargs):
            input_shape = validate_input_shape(
                name, input_shape, default_input_shape, min_input_size
            )
            _check_weights_argument(name, weights, keras_application, kwargs)
            model = builder(input_shape, **kwargs)
            if weights is not None:
                from zoo import weights as weight_loading

                weight_loading.load_into(model, weights, _REGISTRY[name], kwargs)
            return model

        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered.")
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=build,
            default_input_shape=tuple(default_input_shape),
            min_input_size=min_input_size,
            paper=paper,
            keras_application=keras_application,
        )
        return build

    return decorate


def validate_input_shape(name, input_shape, default_input_shape, min_input_size):
    if input_shape is None:
        return tuple(default_input_shape)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(
        not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in input_shape
    ):
        raise ValueError(
            f"{name}: input_shape must be (height, width, channels) of positive integers "
            f"(channels last), got {input_shape!r}."
        )
    height, width, _ = input_shape
    if height < min_input_size or width < min_input_size:
        raise ValueError(
            f"{name}: input_shape {input_shape} is too small; this model needs at least "
            f"{min_input_size}x{min_input_size} pixels (default input is {tuple(default_input_shape)})."
        )
    return input_shape


def _check_weights_argument(name, weights, keras_application, kwargs):
    if weights is None:
        return
    if weights == "imagenet":
        if keras_application is None:
            with_imagenet = [n for n, info in _REGISTRY.items() if info.keras_application]
            raise ValueError(
                f"{name} has no ImageNet weights; weights='imagenet' is available for: "
                f"{', '.join(sorted(with_imagenet))}."
            )
        return
    if not isinstance(weights, (str, os.PathLike)) or not str(weights).endswith(
        (".weights.h5", ".keras")
    ):
        raise ValueError(
            f"{name}: weights must be None, 'imagenet', or a path to a .weights.h5 or .keras "
            f"file; got {weights!r}."
        )
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{name}: weights file {str(weights)!r} does not exist.")


def list_models(pattern="*"):
    """Registered model names matching a shell-style pattern, sorted: `list_models("resnet*")`."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(name) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} Available models: {', '.join(list_models())}."
        ) from None


def get_builder(name):
    return model_info(name).builder


def create(name, input_shape=None, **kwargs):
    """Build a registered model: `create("resnet20", input_shape=(32, 32, 3), num_classes=10)`."""
    return get_builder(name)(input_shape, **kwargs)

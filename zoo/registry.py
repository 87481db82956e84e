"""The model registry: every zoo builder is registered here under its name.

`register_model` turns a family's builder into a named model's builder, so that what every
builder shares is done in one place: the explicit keyword signature and its `Args:` docstring,
unknown keywords refused at once, the input shape defaulted and validated, and `weights` loaded
after the build.
"""

import dataclasses
import difflib
import fnmatch
import inspect
import os
import textwrap
from collections.abc import Callable

from zoo.common import ARGUMENT_DOCS

_REGISTRY: dict = {}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable
    default_input_shape: tuple
    min_input_size: int
    paper: str
    # A keras.applications constructor with the same architecture, for weights="imagenet".
    keras_application: Callable | None = None


def register_model(
    name,
    family_builder,
    *,
    summary,
    paper,
    default_input_shape,
    min_input_size,
    keras_application=None,
    fixed=None,
    defaults=None,
    argument_docs=None,
):
    """Register model `name`, built by `family_builder(input_shape, **arguments)`; return its
    builder.

    `fixed` holds the constants the name stands for (VGG-16's depth); they are not arguments of
    the builder. `defaults` replaces the family's defaults (resnet20's num_classes=10). Every other
    keyword argument of `family_builder`, plus `weights`, is an argument of the builder, shown by
    `inspect.signature` and `help()` and documented in its `Args:` from `common.ARGUMENT_DOCS`
    and the family's `argument_docs` (which take precedence). An unknown keyword is a TypeError
    naming the valid ones, raised before anything is built. The input shape defaults to
    `default_input_shape`; one below `min_input_size` is a ValueError naming the minimum.
    """
    if name in _REGISTRY:
        raise ValueError(f"A model named {name!r} is already registered.")
    fixed = dict(fixed or {})
    signature = _builder_signature(name, family_builder, fixed, {"name": name, **(defaults or {})})

    def build(*args, **kwargs):
        unknown = [key for key in kwargs if key not in signature.parameters]
        if unknown:
            close = difflib.get_close_matches(unknown[0], signature.parameters, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{name}() got an unexpected keyword argument {unknown[0]!r}.{hint} Its "
                f"arguments: {', '.join(signature.parameters)}."
            )
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{name}(): {error}.") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        input_shape = validate_input_shape(
            name, arguments.pop("input_shape"), default_input_shape, min_input_size
        )
        weights = arguments.pop("weights")
        _check_weights_argument(name, weights, keras_application)
        model = family_builder(input_shape, **fixed, **arguments)
        if weights is not None:
            from zoo import weights as weight_loading

            weight_loading.load_into(model, weights, _REGISTRY[name], arguments)
        return model

    build.__name__ = build.__qualname__ = name
    build.__module__ = family_builder.__module__  # the family, as `tuning.spaces.family` reads it
    build.__signature__ = signature
    build.__doc__ = _docstring(
        name,
        summary,
        signature,
        argument_docs or {},
        f"{paper}. Default input {'x'.join(map(str, default_input_shape))}; at least "
        f"{min_input_size}x{min_input_size} pixels.",
    )
    _REGISTRY[name] = ModelInfo(
        name=name,
        builder=build,
        default_input_shape=tuple(default_input_shape),
        min_input_size=min_input_size,
        paper=paper,
        keras_application=keras_application,
    )
    return build


def _builder_signature(name, family_builder, fixed, defaults):
    """`(input_shape=None, *, <the family's keywords except the fixed ones, with the new
    defaults>)`, and `weights=None` after `classifier_activation` as in keras.applications."""
    family = inspect.signature(family_builder).parameters
    for argument in (*fixed, *defaults):
        if argument not in family or argument == "input_shape":
            raise TypeError(f"{name}: {family_builder.__name__} has no argument {argument!r}.")
    parameters = [
        inspect.Parameter("input_shape", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
    ]
    for argument, parameter in family.items():
        if argument == "input_shape" or argument in fixed:
            continue
        default = defaults.get(argument, parameter.default)
        if default is inspect.Parameter.empty:
            raise TypeError(
                f"{name}: argument {argument!r} of {family_builder.__name__} needs a "
                f"default (fixed or defaults)."
            )
        parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=default))
        if argument == "classifier_activation":
            parameters.append(
                inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=None)
            )
    return inspect.Signature(parameters)


def _docstring(name, summary, signature, family_docs, provenance):
    docs = {**ARGUMENT_DOCS, **family_docs}
    missing = [argument for argument in signature.parameters if argument not in docs]
    if missing:
        raise TypeError(f"{name}: no Args text for {', '.join(missing)}.")
    lines = [summary, "", textwrap.fill(provenance, 96), "", "Args:"]
    for argument, parameter in signature.parameters.items():
        text = f"{argument}: {docs[argument]} Default: {parameter.default!r}."
        lines.append(textwrap.fill(text, 96, initial_indent="    ", subsequent_indent="        "))
    lines += ["", "Returns:", "    A `keras.Model`."]
    return "\n".join(lines)


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
            f"{min_input_size}x{min_input_size} pixels "
            f"(default input is {tuple(default_input_shape)})."
        )
    return input_shape


def _check_weights_argument(name, weights, keras_application):
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

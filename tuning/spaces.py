"""Search spaces as data: training-config paths mapped to the ranges a search draws from.

An entry is keyed by the config path it sets (`optimizer.lr`, `data.batch_size`,
`model.options.num_stages`, ...) and holds

    type: float | int | choice | boolean
    min, max, step, sampling (linear | log)    for float and int; a float may also take
                                                log_one_minus: 1 - value is log-uniform
    values                                      for choice
    default                                     optional, the value of the first build
    when: {PATH: [values]}                      optional, active only while the choice PATH
                                                takes one of these values

Every model gets `COMMON_SPACE` plus the knobs of its family (`FAMILY_SPACES`, keyed by the zoo
module that defines it); a search from --init-from weights gets `TRANSFER_SPACE` instead of the
knobs that would change the architecture. A sweep's `space:` section changes that default: an
entry with a `type` replaces the default entry, one without narrows it (its keys override), and
`null` removes it.
A path the sweep fixes in a config section leaves the space: fixed values win.
"""

import copy
import difflib

import zoo
from training.config import TrainConfig, nested

TYPES = ("float", "int", "choice", "boolean")
SAMPLINGS = ("linear", "log", "log_one_minus")
KEYS = {
    "float": {"type", "min", "max", "step", "sampling", "default", "when"},
    "int": {"type", "min", "max", "step", "sampling", "default", "when"},
    "choice": {"type", "values", "default", "when"},
    "boolean": {"type", "default", "when"},
}
# Paths fixed for a whole search: they decide the data and the input shape, which are prepared
# once, or where and how the runs execute.
FIXED_PATHS = ("epochs", "seed", "model.name", "model.init_from", "hardware", "output", "data")
SEARCHABLE_DATA_PATHS = ("data.batch_size",)

COMMON_SPACE = {
    "optimizer.name": {"type": "choice", "values": ["adam", "sgd", "rmsprop"]},
    "optimizer.lr": {"type": "float", "min": 1e-5, "max": 1e-1, "sampling": "log", "default": 1e-3},
    # 1 - momentum log-uniform in [0.001, 0.1], as the course notes' table samples it. Searched
    # for SGD only: RMSprop keeps its default of no momentum in a search.
    "optimizer.momentum": {
        "type": "float",
        "min": 0.9,
        "max": 0.999,
        "sampling": "log_one_minus",
        "default": 0.9,
        "when": {"optimizer.name": ["sgd"]},
    },
    "optimizer.weight_decay": {
        "type": "float",
        "min": 1e-6,
        "max": 1e-2,
        "sampling": "log",
        "default": 1e-4,
    },
    "data.batch_size": {"type": "choice", "values": [32, 64, 128], "default": 64},
    "augment.preset": {"type": "choice", "values": ["none", "light", "standard"]},
    "model.activation": {
        "type": "choice",
        "values": ["relu", "leaky_relu", "elu", "swish", "gelu"],
    },
    "model.dropout": {"type": "float", "min": 0.0, "max": 0.5, "step": 0.1},
}
FAMILY_SPACES = {
    "stagewise": {
        "model.options.num_stages": {"type": "int", "min": 2, "max": 4, "default": 3},
        "model.options.convs_per_stage": {"type": "int", "min": 1, "max": 3, "default": 2},
        "model.options.filters": {"type": "choice", "values": [16, 32, 64], "default": 32},
        "model.options.kernel_size": {"type": "choice", "values": [3, 5]},
    },
    "resnet": {
        "model.options.width": {"type": "choice", "values": [0.5, 1.0, 2.0], "default": 1.0}
    },
    "mobilenet": {
        "model.options.alpha": {"type": "choice", "values": [0.5, 0.75, 1.0], "default": 1.0}
    },
    "vgg": {
        "model.options.fc_units": {"type": "choice", "values": [256, 1024, 4096], "default": 4096}
    },
    "alexnet": {
        "model.options.fc_units": {"type": "choice", "values": [256, 1024, 4096], "default": 4096}
    },
    "lenet": {"model.options.fc_units": {"type": "choice", "values": [84, 128, 256]}},
}


def family(model_name) -> str:
    """The zoo family of a model: the module that defines it (`resnet20` -> `resnet`)."""
    return zoo.model_info(model_name).builder.__module__.rsplit(".", 1)[-1]


# A search from --init-from weights: the source fixes the architecture (no family knobs, and
# no other activation than the one its weights learned with); what it searches instead is how
# much of the network trains and how fast. (With transfer.mode fixed to partial, the multiplier
# leaves the space with its condition: a sweep's space entry with a type brings it back.)
TRANSFER_SPACE = {
    "transfer.mode": {"type": "choice", "values": ["finetune", "linear_probe"]},
    "transfer.backbone_lr_multiplier": {
        "type": "float",
        "min": 0.01,
        "max": 1.0,
        "sampling": "log",
        "default": 0.1,
        "when": {"transfer.mode": ["finetune"]},
    },
}
# Paths that change the weights a source must fit.
ARCHITECTURE_PREFIXES = ("model.options.", "model.normalization", "model.activation")


def default_space(model_name, transfer=False) -> dict:
    """COMMON_SPACE and the family's knobs, or with `transfer` (an --init-from search) the
    common knobs that leave the architecture alone and TRANSFER_SPACE."""
    if transfer:
        common = {
            path: entry
            for path, entry in COMMON_SPACE.items()
            if not path.startswith(ARCHITECTURE_PREFIXES)
        }
        return copy.deepcopy({**common, **TRANSFER_SPACE})
    return copy.deepcopy({**COMMON_SPACE, **FAMILY_SPACES.get(family(model_name), {})})


def resolve_space(model_name, overrides=None, fixed=None) -> dict:
    """The default space of `model_name`, changed by `overrides` (a sweep's `space:` section)
    and without the paths set in `fixed` (the sweep's config sections, as nested dicts).

    Raises ValueError for an unknown path, a malformed entry, a path both fixed and searched,
    or, in a search from --init-from weights, a path that changes the architecture.
    """
    transfer = bool(_lookup(fixed or {}, "model.init_from"))
    space = default_space(model_name, transfer=transfer)
    fixed_paths = set(_leaf_paths(fixed or {}))
    for path, entry in (overrides or {}).items():
        if transfer and entry is not None and path.startswith(ARCHITECTURE_PREFIXES):
            raise ValueError(
                f"space {path}: a search from --init-from weights keeps the source's "
                f"architecture; fix it in the config sections instead of searching it."
            )
        if entry is None:
            if path not in space:
                raise ValueError(
                    f"space: cannot remove {path!r}, it is not in the space of "
                    f"{model_name} ({', '.join(space)})."
                )
            del space[path]
            continue
        if not isinstance(entry, dict):
            raise ValueError(
                f"space {path}: expected a mapping such as {{type: choice, values: "
                f"[...]}} or null, got {entry!r}."
            )
        if path in fixed_paths:
            raise ValueError(
                f"space {path}: the sweep also fixes this path in its config "
                f"sections; keep one of the two."
            )
        if "type" in entry or path not in space:
            space[path] = dict(entry)
        else:
            narrowed = {**space[path], **entry}
            # A default the narrowed range no longer holds goes; the first value takes its place.
            if "default" not in entry and not _holds(narrowed, narrowed.get("default")):
                narrowed.pop("default", None)
            space[path] = narrowed
    for path in fixed_paths:
        space.pop(path, None)
    for path, entry in space.items():
        check_entry(path, entry)
    _resolve_conditions(space, fixed or {})
    return space


def _leaf_paths(values, prefix=""):
    for key, value in values.items():
        path = f"{prefix}{key}"
        # The keys of model.options are builder arguments: leaves, whatever their values.
        if isinstance(value, dict) and value and not prefix.startswith("model.options."):
            yield from _leaf_paths(value, prefix=f"{path}.")
        else:
            yield path


def check_entry(path, entry):
    kind = entry.get("type")
    if kind not in TYPES:
        raise ValueError(f"space {path}: type must be one of {', '.join(TYPES)}, got {kind!r}.")
    unknown = set(entry) - KEYS[kind]
    if unknown:
        raise ValueError(
            f"space {path}: a {kind} entry does not take {', '.join(sorted(unknown))}; "
            f"its keys are {', '.join(sorted(KEYS[kind]))}."
        )
    if kind in ("float", "int"):
        number = float if kind == "float" else int
        for key in ("min", "max"):
            value = entry.get(key)
            if not _is_number(value, number):
                hint = (
                    " (YAML reads 1e-4 as text: write 1.0e-4)"
                    if isinstance(value, str) and "e" in value.lower()
                    else ""
                )
                raise ValueError(
                    f"space {path}: {key} must be a{'n' if kind == 'int' else ''} "
                    f"{kind}, got {value!r}{hint}."
                )
        if entry["min"] >= entry["max"]:
            raise ValueError(
                f"space {path}: min must be below max, got min {entry['min']} and "
                f"max {entry['max']} (fix a single value in the config section)."
            )
        sampling = entry.get("sampling", "linear")
        if sampling not in SAMPLINGS:
            raise ValueError(
                f"space {path}: sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}."
            )
        if sampling == "log" and entry["min"] <= 0:
            raise ValueError(f"space {path}: log sampling needs min > 0, got {entry['min']}.")
        if sampling == "log_one_minus" and not (kind == "float" and entry["max"] < 1):
            raise ValueError(
                f"space {path}: log_one_minus sampling (1 - value on a log scale) "
                f"needs a float range below 1, got a {kind} up to {entry['max']}."
            )
        if "step" in entry and not (_is_number(entry["step"], number) and entry["step"] > 0):
            raise ValueError(
                f"space {path}: step must be a positive {kind}, got {entry['step']!r}."
            )
        if "default" in entry and not (
            _is_number(entry["default"], number)
            and entry["min"] <= entry["default"] <= entry["max"]
        ):
            raise ValueError(
                f"space {path}: default must lie in [{entry['min']}, {entry['max']}], "
                f"got {entry['default']!r}."
            )
    elif kind == "choice":
        values = entry.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError(
                f"space {path}: a choice needs a non-empty list of values, got {values!r}."
            )
        if len({type(v) for v in values}) > 1 and not all(_is_number(v, float) for v in values):
            raise ValueError(
                f"space {path}: the values of a choice must share one type, got {values!r}."
            )
        if "default" in entry and entry["default"] not in values:
            raise ValueError(
                f"space {path}: default {entry['default']!r} is not one of {values!r}."
            )
    elif "default" in entry and not isinstance(entry["default"], bool):
        raise ValueError(f"space {path}: default must be true or false, got {entry['default']!r}.")
    when = entry.get("when")
    if when is not None and not (
        isinstance(when, dict) and len(when) == 1 and isinstance(next(iter(when.values())), list)
    ):
        raise ValueError(
            f"space {path}: when must map one choice path to a list of its values, "
            f"e.g. {{optimizer.name: [sgd]}}; got {when!r}."
        )


def is_numeric(entry) -> bool:
    """Whether an entry's values are numbers, which a plot can put on an axis."""
    return entry["type"] in ("float", "int") or (
        entry["type"] == "choice" and all(_is_number(v, float) for v in entry["values"])
    )


def _holds(entry, value):
    if entry["type"] == "choice":
        return value in entry.get("values", [])
    if entry["type"] == "boolean":
        return isinstance(value, bool)
    try:
        return entry["min"] <= value <= entry["max"]
    except (KeyError, TypeError):
        return False


def _is_number(value, number):
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if number is float else isinstance(value, int)


def _resolve_conditions(space, fixed):
    """A condition on a fixed path is decided now: the entry stays unconditional or leaves."""
    for path in list(space):
        when = space[path].get("when")
        if when is None:
            continue
        ((parent, values),) = when.items()
        if parent in space:
            if space[parent]["type"] != "choice" or space[parent].get("when"):
                raise ValueError(
                    f"space {path}: its condition must name an unconditional "
                    f"choice, and {parent} is not one."
                )
            missing = [v for v in values if v not in space[parent]["values"]]
            if missing:
                raise ValueError(
                    f"space {path}: {parent} never takes {missing!r} "
                    f"(its values: {space[parent]['values']!r})."
                )
            continue
        if _lookup(fixed, parent, default=_default_value(parent)) in values:
            del space[path]["when"]
        else:
            del space[path]


def _lookup(values, path, default=None):
    for part in path.split("."):
        if not isinstance(values, dict) or part not in values:
            return default
        values = values[part]
    return values


def _default_value(path):
    return _lookup(TrainConfig().to_dict(), path)


def check_paths(space, config: TrainConfig):
    """Every path must name a config value a trial may change. Values, and option names (which
    must be arguments of the model's builder), are checked by check_values."""
    config_values = config.to_dict()
    for path in space:
        if path not in SEARCHABLE_DATA_PATHS and any(
            path == fixed or path.startswith(fixed + ".") for fixed in FIXED_PATHS
        ):
            raise ValueError(
                f"space {path}: this path is fixed for a whole search (it decides "
                f"the data, the input or where runs go); set it in its config section."
            )
        if path.startswith("model.options."):
            continue  # the builder's signature decides, in validate() (check_values)
        if _lookup(config_values, path, default=KeyError) is KeyError or path.count(".") != 1:
            known = [f"{s}.{k}" for s, v in config_values.items() if isinstance(v, dict) for k in v]
            close = difflib.get_close_matches(path, known, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ValueError(
                f"space {path}: not a training-config path.{hint} Paths look like "
                f"optimizer.lr, data.batch_size or model.options.<builder argument>."
            )


def check_values(space, config: TrainConfig):
    """Validate the config (TrainConfig.validate, as a trial's) at every choice value and at
    both ends of every range, one path at a time, so a bad value fails before the data is read
    rather than as a failed trial."""
    for path, entry in space.items():
        if entry["type"] == "choice":
            candidates = entry["values"]
        elif entry["type"] == "boolean":
            candidates = [False, True]
        else:
            candidates = [entry["min"], entry["max"]]
        for value in candidates:
            try:
                config.replace(nested(path, value)).validate()
            except ValueError as error:
                raise ValueError(
                    f"space {path}: the value {value!r} is not valid: {error}"
                ) from None

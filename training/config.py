"""The training configuration: typed sections, YAML in and out, command-line flags, validation.

One `TrainConfig` describes a run completely. Precedence: dataclass defaults < `--config` YAML
files (in order) < flags < `--set section.key=value`. The resolved config is saved with the run
as `config.yaml` and can be fed back with `--config` to repeat it.
"""

import argparse
import dataclasses
import difflib
import importlib
import types
import typing

import yaml


def option(default, help, flag=None, choices=None, metavar=None, group=None):
    """A config field with its command-line help; `flag` overrides the derived `--field-name`
    ("" for none). `choices` names the registry of valid values ("training.hardware.PRECISIONS"),
    which the help lists and the owning module's check_config enforces; `group` titles the help
    group of a field outside a section."""
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "group": group}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class DataConfig:
    dataset: str = option(
        "digits",
        "digits (scikit-learn's bundled 8x8 digits, no network), a tensorflow-datasets name "
        "(mnist, cifar10, ...), a folder of class subfolders, or a .npz with x_train/y_train/"
        "x_test/y_test",
        metavar="NAME|PATH",
    )
    data_dir: str | None = option(None, "tensorflow-datasets data directory", metavar="DIR")
    manual_dir: str | None = option(
        None, "folder holding a tfds dataset's original files (prepares it offline)", metavar="DIR"
    )
    val_split: float = option(
        0.1,
        "fraction of train carved out for validation when the dataset has no validation split "
        "(stratified, seeded)",
    )
    test_split: float = option(
        0.1, "fraction carved out for test when the dataset has no test split"
    )
    image_size: int | None = option(
        None,
        "side of the square model input; default: the model's default input size",
        metavar="PX",
    )
    fit: str = option(
        "resize", "how images are fitted to the input size", choices="training.data.FIT_METHODS"
    )
    batch_size: int = option(32, "batch size per replica")
    cache: bool = option(
        True, "cache decoded images in memory (and the float32 inputs made of them, where they fit)"
    )
    classes: list = option(
        [],
        "keep only these classes, by name or index, in this order (e.g. 5,6,7,8,9)",
        metavar="A,B,...",
    )
    subset_per_class: int | None = option(
        None,
        "train on a seeded, stratified subset of N images per class of the training split",
        metavar="N",
    )


@dataclasses.dataclass
class ModelConfig:
    name: str = option("lenet5", "zoo model name (python -m zoo lists them)", flag="--model")
    activation: str | None = option(
        None, "activation instead of the model's own (relu, gelu, swish, ...)"
    )
    normalization: str | None = option(
        None, "normalization instead of the model's own", choices="zoo.options.NORMALIZATIONS"
    )
    kernel_initializer: str | None = option(
        None, "kernel initializer instead of the model's own (he_normal, glorot_uniform, ...)"
    )
    dropout: float | None = option(None, "dropout rate instead of the model's own")
    l2: float = option(0.0, "L2 penalty on kernels, inside the model (see also --weight-decay)")
    leaky_slope: float | None = option(
        None,
        "slope of leaky_relu below zero, where the model uses it (--activation leaky_relu); "
        "default: the builders' own",
    )
    binary: bool = option(
        False,
        "a two-class dataset as one sigmoid unit with binary cross-entropy and binary accuracy, "
        "instead of a two-way softmax",
    )
    options: dict = option(
        {}, "family knobs passed to the builder, e.g. --set model.options.alpha=0.5", flag=""
    )
    init_from: str | None = option(
        None,
        "start from the weights of a previous run directory, a model.keras, or imagenet "
        "(keras.applications' weights); a fresh head when the classes differ",
        metavar="RUN|FILE|imagenet",
    )


@dataclasses.dataclass
class TransferConfig:
    mode: str | None = option(
        None,
        "what trains of a model from --init-from (default finetune): finetune (everything), "
        "linear_probe (the new head only), partial (from --trainable-from on)",
        flag="--transfer",
        metavar="MODE",
    )
    trainable_from: str | None = option(
        None,
        "partial: the first layer (or layer-name prefix such as conv4) that trains; "
        "everything before it is frozen",
        metavar="LAYER",
    )
    feature_layer: str | None = option(
        None,
        "put the new head on this layer's output and cut away the rest "
        "(a small, different dataset)",
        metavar="LAYER",
    )
    backbone_lr_multiplier: float = option(
        0.1, "learning rate of the pretrained layers that train, relative to --lr (the new head's)"
    )
    two_phase: bool = option(
        False,
        "first train the new head alone for --probe-epochs, then fine-tune with a fresh schedule",
    )
    probe_epochs: int = option(
        3, "two_phase: epochs of the first (linear probe) phase, counted in --epochs"
    )
    source: dict | None = option(
        None,
        "where the weights came from, recorded by the run "
        "(path and config hash, or imagenet and the weights file)",
        flag="",
    )


@dataclasses.dataclass
class OptimizerConfig:
    name: str = option(
        "adam", "optimizer", flag="--optimizer", choices="training.optimizers.OPTIMIZERS"
    )
    lr: float = option(2e-3, "base learning rate (per the global batch)")
    momentum: float | None = option(
        None,
        "momentum of sgd and rmsprop, ignored by the others (unset: 0.9 for sgd, 0 for rmsprop)",
    )
    nesterov: bool = option(False, "Nesterov momentum (sgd only)")
    rho: float = option(0.9, "rmsprop only: decay of its moving average of squared gradients")
    epsilon: float = option(
        1e-7,
        "adam, adamw, nadam, rmsprop, adagrad: the constant added to the denominator for stability",
    )
    weight_decay: float = option(0.0, "decoupled weight decay applied by the optimizer")
    clip_value: float | None = option(None, "clip each gradient element to [-v, v]")
    clip_norm: float | None = option(None, "clip each gradient to this L2 norm")
    global_clip_norm: float | None = option(None, "clip all gradients to this global L2 norm")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy (0: off)")
    ema: bool = option(
        False,
        "keep an exponential moving average of the weights: "
        "validation and the exported model use it",
    )
    scale_lr: str | None = option(
        None,
        "scale the lr with the number of replicas",
        choices="training.hardware.LR_SCALING_RULES",
    )


@dataclasses.dataclass
class ScheduleConfig:
    name: str = option(
        "cosine",
        "learning-rate schedule",
        flag="--schedule",
        choices="training.schedules.SCHEDULES",
    )
    warmup_epochs: float = option(0.0, "linear warmup epochs in front of the schedule")
    step_epochs: int = option(10, "step: epochs between drops")
    step_factor: float = option(0.5, "step: multiply the lr by this at each drop")
    decay_rate: float = option(0.95, "exponential: lr0 * rate^epoch")
    tau_epochs: float = option(1.0, "inverse_time / inverse_sqrt: epochs before the decay starts")
    min_lr: float = option(0.0, "cosine / one_cycle / plateau: the lowest lr")
    plateau_patience: int = option(3, "plateau: epochs without val_loss improvement before a drop")
    plateau_factor: float = option(0.5, "plateau: multiply the lr by this at each drop")


@dataclasses.dataclass
class AugmentConfig:
    preset: str = option(
        "none", "augmentation preset", flag="--augment", choices="training.augment.PRESETS"
    )
    ops: list = option(
        [],
        "explicit augmentation ops instead of the preset, comma-separated (e.g. crop,flip,mixup)",
        flag="--augment-ops",
    )


@dataclasses.dataclass
class CallbacksConfig:
    early_stopping_patience: int = option(
        10,
        "stop after this many epochs without val_loss improvement and restore the best weights "
        "(0: off)",
        flag="--patience",
    )
    stop_at_perfect_accuracy: bool = option(False, "stop when training accuracy reaches 100%")
    max_accuracy_drop: float | None = option(
        None, "stop when training accuracy falls this far below its best (e.g. 0.2)"
    )
    max_val_drop: float | None = option(
        None, "stop when val_accuracy falls this far below its best (e.g. 0.1)"
    )
    min_delta: float = option(
        0.0, "early stopping: the least improvement of val_loss that resets --patience"
    )
    checkpoint_best: bool = option(True, "keep best.keras, the model with the lowest val_loss")
    checkpoint_interval: float = option(
        10.0,
        "write best.keras and the resume backup at an epoch's end only when this many seconds "
        "have passed since their last write (0, and always with multi_worker: every epoch); a "
        "crash loses at most about this much training",
        metavar="SECONDS",
    )
    tensorboard: bool = option(False, "write TensorBoard logs to <run>/tensorboard")


@dataclasses.dataclass
class HardwareConfig:
    precision: str = option(
        "auto",
        "auto: mixed_float16 on tensor-core GPUs, mixed_bfloat16 on CPUs with fast bf16 "
        "(float32 for the MobileNets there), else float32; onednn_bfloat16: a float32 model "
        "whose graphs TensorFlow rewrites to bfloat16 for oneDNN (CPUs with fast bf16 only)",
        choices="training.hardware.PRECISIONS",
    )
    threads: str = option(
        "auto",
        "CPU threads: one_per_op runs each op on one core, as many ops at once as cores; "
        "tensorflow keeps TensorFlow's pools (each op on every core); auto: one_per_op on CPUs "
        "of at most 2 cores where the batch is split (--sub-batches) or, unsplit, for inputs of "
        "at most 32x32 in batches of at most 32 trained in bfloat16 on CPUs with native "
        "bfloat16, else tensorflow",
        choices="training.hardware.THREADS",
    )
    sub_batches: int | None = option(
        None,
        "split each training batch into N parts whose forward and backward passes run side by "
        "side, one chain of ops per core (each BatchNorm then normalizes each part by its own "
        "statistics, as across devices; loss and gradients are the whole batch's); default: "
        "one part per core on CPUs of 2 cores when each part keeps 16 examples and threads "
        "are not tensorflow (1.1-1.5x the images/s there), else 1",
        metavar="N",
    )
    strategy: str = option(
        "auto",
        "auto: mirrored over several local GPUs, else one device; multi_worker reads TF_CONFIG",
        choices="training.hardware.STRATEGIES",
    )
    steps_per_execution: int = option(
        16,
        "training steps per call into TensorFlow: fewer Python round trips (lenet5 at batch 32: "
        "1.35x the images/s of 1, same results); per-batch callbacks see every Nth step",
        metavar="N",
    )


@dataclasses.dataclass
class OutputConfig:
    output_dir: str = option("saved_models", "where runs are written", metavar="DIR")
    run_name: str | None = option(
        None,
        "run directory name (default <model>-<dataset>; a finished run gets a numbered suffix)",
    )
    overwrite: bool = option(False, "replace a finished run of the same name")


@dataclasses.dataclass
class TrainConfig:
    epochs: int = option(20, "maximum number of epochs")
    seed: int = option(0, "random seed: the same seed repeats a run")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    transfer: TransferConfig = dataclasses.field(default_factory=TransferConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    callbacks: CallbacksConfig = dataclasses.field(default_factory=CallbacksConfig)
    hardware: HardwareConfig = dataclasses.field(default_factory=HardwareConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: dict) -> "TrainConfig":
        """A copy with `overrides` (a nested dict, as in YAML) applied and type-checked."""
        return from_dict(deep_update(self.to_dict(), overrides))

    def validate(self):
        """Raise checks.ConfigError for the first bad value, before any data is read or any file
        written: each module checks the settings it owns."""
        from training import (
            augment,
            callbacks,
            data,
            hardware,
            optimizers,
            rundir,
            schedules,
            trainer,
            transfer,
        )

        # epochs is checked with the schedule that spans them.
        for module in (
            data,
            trainer,
            transfer,
            optimizers,
            schedules,
            augment,
            callbacks,
            hardware,
            rundir,
        ):
            module.check_config(self)
        return self


HELP_GROUPS = {
    "data": "data",
    "model": "model",
    "transfer": "transfer learning (with --init-from)",
    "optimizer": "optimizer",
    "schedule": "learning-rate schedule",
    "augment": "augmentation",
    "callbacks": "callbacks",
    "hardware": "hardware",
    "output": "output",
}


# ---------------------------------------------------------------------------- dicts and YAML
# Shared by every typed config here (TrainConfig, the tuner's SearchSettings): nested dicts as
# in YAML in, type-checked dataclasses out, unknown keys refused with a suggestion.


def nested(path: str, value) -> dict:
    """`model.options.filters`, 32 -> {"model": {"options": {"filters": 32}}}."""
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


def deep_update(base: dict, overrides: dict) -> dict:
    """Merge `overrides` into `base` (both nested dicts), section by section."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def from_dict(values: dict, cls=TrainConfig, prefix=""):
    """A `cls` (TrainConfig by default) from nested values; `prefix` names where they came from
    in messages ("search.")."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {values!r}.")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" Did you mean {prefix}{close[0]}?" if close else ""
            raise ValueError(
                f"Unknown config key {prefix + str(key)!r}.{hint} Valid keys here: "
                f"{', '.join(fields)}."
            )
    kwargs = {}
    for key, value in values.items():
        field = fields[key]
        if dataclasses.is_dataclass(field.type):
            kwargs[key] = from_dict(value, field.type, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, field.type, prefix + key)
    return cls(**kwargs)


def _base_type(annotation):
    """(type, optional) of a field annotation: Optional[int] -> (int, True)."""
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in arguments:
        return next(a for a in arguments if a is not type(None)), True
    return annotation, False


def _coerce(value, annotation, where):
    """Check (and gently convert: int -> float, "a,b" -> list) one value against its field type."""
    base, optional = _base_type(annotation)
    if value is None:
        if optional:
            return None
        raise ValueError(f"config {where}: a value is required (got null).")
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is list and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if base in (int, float, str, bool, list, dict) and not (
        isinstance(value, base) and not (base is int and isinstance(value, bool))
    ):
        raise ValueError(
            f"config {where}: expected {base.__name__}, got {value!r} ({type(value).__name__})."
        )
    return value


def load_yaml(path) -> dict:
    try:
        with open(path) as file:
            values = yaml.safe_load(file) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"Config file {path} does not exist.") from None
    except yaml.YAMLError as error:
        raise ValueError(f"Config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(
            f"Config file {path} must hold a mapping of sections, got {type(values).__name__}."
        )
    return values


def parse_assignment(text: str) -> dict:
    """`optimizer.lr=0.05` -> {"optimizer": {"lr": 0.05}} (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected PATH=VALUE (e.g. optimizer.lr=0.05), got {text!r}.")
    return nested(key.strip(), yaml.safe_load(raw) if raw.strip() else None)


# ---------------------------------------------------------------------------- command line


def leaf_fields(cls, prefix=""):
    """(dotted path, field) of every value of `cls`, sections' fields included."""
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(field.type):
            yield from leaf_fields(field.type, prefix=f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, field


def _flag_name(field):
    flag = field.metadata.get("flag")
    return flag if flag is not None else "--" + field.name.replace("_", "-")


def _bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class Choices:
    """The valid values of a registry ("training.hardware.PRECISIONS") as a help metavar,
    looked up only when the help is shown: the registries import TensorFlow."""

    def __init__(self, registry):
        self.registry = registry

    def names(self):
        module, _, name = self.registry.rpartition(".")
        return [
            str(value)
            for value in getattr(importlib.import_module(module), name)
            if value is not None
        ]

    def __str__(self):
        return "{" + ",".join(self.names()) + "}"


def add_field_arguments(parser, cls, *, paths=None, prefix="", groups=None):
    """One flag per value of `cls` (or only those in `paths`), with its default in the help,
    grouped by section (titles in `groups`) or by the field's own `group`. Flags that are not
    given leave no value (see flag_values), so files and defaults below them show through.
    Returns the argument groups by title, for a caller's own flags."""
    defaults = cls()
    argument_groups = {}
    for path, field in leaf_fields(cls):
        flag = _flag_name(field)
        if not flag or (paths is not None and path not in paths):
            continue
        section = path.rpartition(".")[0]
        title = field.metadata.get("group") or (groups or {}).get(section) or "options"
        if title not in argument_groups:
            argument_groups[title] = parser.add_argument_group(title)
        default = defaults
        for part in path.split("."):
            default = getattr(default, part)
        base, _ = _base_type(field.type)
        shown = "-" if default in ([], None, {}) else default
        kwargs = dict(
            dest=prefix + path,
            default=argparse.SUPPRESS,
            # argparse %-formats help strings.
            help=f"{field.metadata['help']} (default: {shown})".replace("%", "%%"),
            metavar=field.metadata.get("metavar") or {int: "N", float: "X"}.get(base, "NAME"),
        )
        if field.metadata.get("choices"):
            kwargs["metavar"] = Choices(field.metadata["choices"])
        if base is bool:
            kwargs.update(nargs="?", const=True, type=_bool, metavar="BOOL")
        elif base in (int, float):
            kwargs["type"] = base
        argument_groups[title].add_argument(flag, **kwargs)
    return argument_groups


def flag_values(args: argparse.Namespace, cls, prefix="") -> dict:
    """The values of the flags given on the command line, nested as in YAML."""
    given = vars(args)
    values: dict = {}
    for path, _ in leaf_fields(cls):
        if prefix + path in given:
            deep_update(values, nested(path, given[prefix + path]))
    return values


def add_arguments(parser: argparse.ArgumentParser):
    """The trainer's command line: --config files, a flag per config value, --set."""
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        help="YAML config file(s); later files override earlier ones, flags override files",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set optimizer.lr=0.05 (repeatable)",
    )
    add_field_arguments(parser, TrainConfig, groups={"": "training", **HELP_GROUPS})


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then --config files in order, then flags, then --set assignments."""
    values: dict = {}
    for path in args.config:
        deep_update(values, load_yaml(path))
    deep_update(values, flag_values(args, TrainConfig))
    for assignment in args.set:
        deep_update(values, parse_assignment(assignment))
    return from_dict(values)

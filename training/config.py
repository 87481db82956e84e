"""The training configuration: typed sections, YAML in and out, command-line flags, validation.

One `TrainConfig` describes a run completely. Precedence: dataclass defaults < `--config` YAML
files (in order) < flags < `--set section.key=value`. The resolved config is saved with the run
as `config.yaml` and can be fed back with `--config` to repeat it.
"""

import argparse
import dataclasses
import difflib
import typing
from typing import Optional

import yaml


def option(default, help, flag=None, choices=None, metavar=None):
    """A config field with its command-line help; `flag` overrides the derived `--field-name`."""
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar}
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
    data_dir: Optional[str] = option(None, "tensorflow-datasets data directory", metavar="DIR")
    manual_dir: Optional[str] = option(
        None, "folder holding a tfds dataset's original files (prepares it offline)", metavar="DIR"
    )
    val_split: float = option(0.1, "fraction of train carved out for validation when the dataset has no validation split (stratified, seeded)")
    test_split: float = option(0.1, "fraction carved out for test when the dataset has no test split")
    image_size: Optional[int] = option(
        None, "side of the square model input; default: the model's default input size", metavar="PX"
    )
    fit: str = option("resize", "how images are fitted to the input size", choices=("resize", "pad"))
    batch_size: int = option(32, "batch size per replica")
    cache: bool = option(True, "cache decoded images in memory")
    classes: list = option([], "keep only these classes, by name or index, in this order (e.g. 5,6,7,8,9)", metavar="A,B,...")
    subset_per_class: Optional[int] = option(None, "train on a seeded, stratified subset of N images per class of the training split", metavar="N")


@dataclasses.dataclass
class ModelConfig:
    name: str = option("lenet5", "zoo model name (python -m zoo lists them)", flag="--model")
    activation: Optional[str] = option(None, "activation instead of the model's own (relu, gelu, swish, ...)")
    normalization: Optional[str] = option(None, "normalization instead of the model's own", choices=("batch", "layer", "group", "instance", "none"))
    kernel_initializer: Optional[str] = option(None, "kernel initializer instead of the model's own (he_normal, glorot_uniform, ...)")
    dropout: Optional[float] = option(None, "dropout rate instead of the model's own")
    l2: float = option(0.0, "L2 penalty on kernels, inside the model (see also --weight-decay)")
    options: dict = option({}, "family knobs passed to the builder, e.g. --set model.options.alpha=0.5", flag="")
    init_from: Optional[str] = option(None, "start from the weights of a previous run directory, a model.keras, or imagenet (keras.applications' weights); a fresh head when the classes differ", metavar="RUN|FILE|imagenet")


@dataclasses.dataclass
class TransferConfig:
    mode: Optional[str] = option(None, "what trains of a model from --init-from (default finetune): finetune (everything), linear_probe (the new head only), partial (from --trainable-from on)", flag="--transfer", metavar="MODE")
    trainable_from: Optional[str] = option(None, "partial: the first layer (or layer-name prefix such as conv4) that trains; everything before it is frozen", metavar="LAYER")
    feature_layer: Optional[str] = option(None, "put the new head on this layer's output and cut away the rest (a small, different dataset)", metavar="LAYER")
    backbone_lr_multiplier: float = option(0.1, "learning rate of the pretrained layers that train, relative to --lr (the new head's)")
    two_phase: bool = option(False, "first train the new head alone for --probe-epochs, then fine-tune with a fresh schedule")
    probe_epochs: int = option(3, "two_phase: epochs of the first (linear probe) phase, counted in --epochs")
    source: Optional[dict] = option(None, "where the weights came from, recorded by the run (path and config hash, or imagenet and the weights file)", flag="")


@dataclasses.dataclass
class OptimizerConfig:
    name: str = option("adam", "optimizer", flag="--optimizer")
    lr: float = option(2e-3, "base learning rate (per the global batch)")
    momentum: float = option(0.9, "momentum (sgd, rmsprop)")
    nesterov: bool = option(False, "Nesterov momentum (sgd)")
    weight_decay: float = option(0.0, "decoupled weight decay applied by the optimizer")
    clip_value: Optional[float] = option(None, "clip each gradient element to [-v, v]")
    clip_norm: Optional[float] = option(None, "clip each gradient to this L2 norm")
    global_clip_norm: Optional[float] = option(None, "clip all gradients to this global L2 norm")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy (0: off)")
    ema: bool = option(False, "keep an exponential moving average of the weights: validation and the exported model use it")
    scale_lr: Optional[str] = option(None, "scale the lr with the number of replicas", choices=("linear",))


@dataclasses.dataclass
class ScheduleConfig:
    name: str = option("cosine", "learning-rate schedule", flag="--schedule")
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
    preset: str = option("none", "augmentation preset", flag="--augment", choices=("none", "light", "standard", "strong"))
    ops: list = option([], "explicit augmentation ops instead of the preset, comma-separated (e.g. crop,flip,mixup)", flag="--augment-ops")


@dataclasses.dataclass
class CallbacksConfig:
    early_stopping_patience: int = option(10, "stop after this many epochs without val_loss improvement and restore the best weights (0: off)", flag="--patience")
    stop_at_perfect_accuracy: bool = option(False, "stop when training accuracy reaches 100%")
    max_accuracy_drop: Optional[float] = option(None, "stop when training accuracy falls this far below its best (e.g. 0.2)")
    checkpoint_best: bool = option(True, "keep best.keras, the model with the lowest val_loss")
    tensorboard: bool = option(False, "write TensorBoard logs to <run>/tensorboard")


@dataclasses.dataclass
class HardwareConfig:
    precision: str = option("auto", "auto: mixed_float16 on tensor-core GPUs, mixed_bfloat16 on CPUs with fast bf16, else float32", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"))
    strategy: str = option("auto", "auto: mirrored over several local GPUs, else one device; multi_worker reads TF_CONFIG", choices=("auto", "one_device", "mirrored", "multi_worker"))


@dataclasses.dataclass
class OutputConfig:
    output_dir: str = option("saved_models", "where runs are written", metavar="DIR")
    run_name: Optional[str] = option(None, "run directory name (default <model>-<dataset>; a finished run gets a numbered suffix)")
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
        merged = self.to_dict()
        _merge(merged, overrides, path="")
        return from_dict(merged)

    def validate(self):
        """Raise ValueError for any bad value, before any data is read or a model built."""
        validate(self)
        return self


SECTIONS = {f.name: f.type for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(f.type)}
HELP_GROUPS = {
    "training": "training",
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


def _merge(target: dict, overrides: dict, path: str):
    if not isinstance(overrides, dict):
        raise ValueError(f"config{' ' + path if path else ''}: expected a mapping, got {overrides!r}.")
    for key, value in overrides.items():
        where = f"{path}.{key}" if path else key
        if key not in target:
            close = difflib.get_close_matches(str(key), list(target), n=1)
            hint = f" Did you mean {path + '.' if path else ''}{close[0]}?" if close else ""
            raise ValueError(
                f"Unknown config key {where!r}.{hint} Valid keys here: {', '.join(target)}."
            )
        if isinstance(target[key], dict) and key != "options" and isinstance(value, dict):
            _merge(target[key], value, where)
        else:
            target[key] = value


def _coerce(value, annotation, where):
    """Check (and gently convert: int -> float, "a,b" -> list) one value against its field type."""
    optional = typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation)
    if value is None:
        if optional:
            return None
        raise ValueError(f"config {where}: a value is required (got null).")
    base = next(a for a in typing.get_args(annotation) if a is not type(None)) if optional else annotation
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


def from_dict(values: dict) -> TrainConfig:
    config = TrainConfig()
    _merge(config.to_dict(), values, path="")  # rejects unknown keys with a suggestion
    for field in dataclasses.fields(TrainConfig):
        if field.name not in values:
            continue
        if field.name in SECTIONS:
            section = getattr(config, field.name)
            for sub in dataclasses.fields(section):
                if sub.name in values[field.name]:
                    raw = values[field.name][sub.name]
                    setattr(section, sub.name, _coerce(raw, sub.type, f"{field.name}.{sub.name}"))
        else:
            setattr(config, field.name, _coerce(values[field.name], field.type, field.name))
    return config


def load_yaml(path) -> dict:
    try:
        with open(path) as file:
            values = yaml.safe_load(file) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"Config file {path} does not exist.") from None
    except yaml.YAMLError as error:
        raise ValueError(f"Config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping of sections, got {type(values).__name__}.")
    return values


def parse_assignment(text: str) -> dict:
    """`optimizer.lr=0.05` -> {"optimizer": {"lr": 0.05}} (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects section.key=value, got {text!r}.")
    return _nest(key.strip(), yaml.safe_load(raw) if raw.strip() else None)


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


# ---------------------------------------------------------------------------- command line


def _flag_name(field):
    flag = field.metadata.get("flag")
    return flag if flag is not None else "--" + field.name.replace("_", "-")


def _flag_fields():
    """(section or None, field, flag) for every config field that has a flag."""
    for field in dataclasses.fields(TrainConfig):
        if field.name in SECTIONS:
            for sub in dataclasses.fields(SECTIONS[field.name]):
                if _flag_name(sub):
                    yield field.name, sub, _flag_name(sub)
        else:
            yield None, field, _flag_name(field)


def _bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_type(annotation):
    optional = typing.get_origin(annotation) is typing.Union
    base = next(a for a in typing.get_args(annotation) if a is not type(None)) if optional else annotation
    return base


def add_arguments(parser: argparse.ArgumentParser, defaults: Optional[TrainConfig] = None):
    """Add one flag per config field, grouped by section, plus --config and --set."""
    defaults = defaults or TrainConfig()
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="YAML config file(s); later files override earlier ones, flags override files")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config key, e.g. --set optimizer.lr=0.05 (repeatable)")
    groups = {}
    for section, field, flag in _flag_fields():
        group_key = section or "training"
        if group_key not in groups:
            groups[group_key] = parser.add_argument_group(HELP_GROUPS[group_key])
        default = getattr(getattr(defaults, section) if section else defaults, field.name)
        base = _field_type(field.type)
        kwargs = dict(
            dest=f"{section}.{field.name}" if section else field.name,
            default=argparse.SUPPRESS,
            # argparse %-formats help strings.
            help=f"{field.metadata['help']} (default: {default if default not in ([], None) else '-'})".replace("%", "%%"),
        )
        if field.metadata.get("choices"):
            kwargs["choices"] = field.metadata["choices"]
        else:
            kwargs["metavar"] = field.metadata.get("metavar") or {int: "N", float: "X"}.get(base, "NAME")
        if base is bool:
            kwargs.update(nargs="?", const=True, type=_bool, metavar="BOOL")
        elif base in (int, float):
            kwargs["type"] = base
        groups[group_key].add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then --config files in order, then flags, then --set assignments."""
    values: dict = {}
    for path in args.config:
        deep_update(values, load_yaml(path))
    for key, value in vars(args).items():
        if key in ("config", "set") or key not in _flag_dests():
            continue
        deep_update(values, _nest(key, value))
    for assignment in args.set:
        deep_update(values, parse_assignment(assignment))
    return from_dict(values)


def _flag_dests():
    return {f"{section}.{field.name}" if section else field.name for section, field, _ in _flag_fields()}


def _nest(dotted: str, value):
    nested = value
    for part in reversed(dotted.split(".")):
        nested = {part: nested}
    return nested


# ---------------------------------------------------------------------------- validation


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _one_of(name, value, allowed):
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ValueError(f"Unknown {name} {value!r}.{hint} Valid: {', '.join(map(str, allowed))}.")


def validate(config: TrainConfig):
    import zoo
    from training import augment, optimizers, schedules, transfer
    from training import data as data_sources

    _require(config.epochs >= 1, f"epochs must be at least 1, got {config.epochs}.")
    data = config.data
    _require(data.batch_size >= 1, f"batch_size must be at least 1, got {data.batch_size}.")
    for name in ("val_split", "test_split"):
        value = getattr(data, name)
        _require(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}.")
    _require(data.val_split + data.test_split < 1.0,
             f"val_split + test_split must leave training data, got {data.val_split} + {data.test_split}.")
    _one_of("model", config.model.name, zoo.list_models())
    info = zoo.model_info(config.model.name)
    if data.image_size is not None:
        _require(
            data.image_size >= info.min_input_size,
            f"image_size {data.image_size} is below {config.model.name}'s minimum input of "
            f"{info.min_input_size}x{info.min_input_size}.",
        )
    if config.model.dropout is not None:
        _require(0.0 <= config.model.dropout < 1.0, f"dropout must be in [0, 1), got {config.model.dropout}.")
    _require(config.model.l2 >= 0, f"l2 must be >= 0, got {config.model.l2}.")

    opt = config.optimizer
    _one_of("optimizer", opt.name, optimizers.OPTIMIZERS)
    _require(opt.lr > 0, f"the learning rate must be positive, got {opt.lr}.")
    _require(0.0 <= opt.momentum < 1.0, f"momentum must be in [0, 1), got {opt.momentum}.")
    _require(opt.weight_decay >= 0, f"weight_decay must be >= 0, got {opt.weight_decay}.")
    _require(0.0 <= opt.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {opt.label_smoothing}.")
    clips = [c for c in ("clip_value", "clip_norm", "global_clip_norm") if getattr(opt, c) is not None]
    _require(len(clips) <= 1, f"choose one gradient clipping, got {', '.join(clips)}.")
    for name in clips:
        _require(getattr(opt, name) > 0, f"{name} must be positive, got {getattr(opt, name)}.")

    _one_of("schedule", config.schedule.name, schedules.SCHEDULES)
    _require(config.schedule.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {config.schedule.warmup_epochs}.")
    _require(config.schedule.warmup_epochs < config.epochs,
             f"warmup_epochs ({config.schedule.warmup_epochs}) must be shorter than the run ({config.epochs} epochs).")

    _one_of("augmentation preset", config.augment.preset, augment.PRESETS)
    for op in config.augment.ops:
        _one_of("augmentation op", op.split(":")[0], augment.OPS)

    _require(config.callbacks.early_stopping_patience >= 0,
             f"patience must be >= 0 (0 turns early stopping off), got {config.callbacks.early_stopping_patience}.")
    if config.callbacks.max_accuracy_drop is not None:
        _require(0 < config.callbacks.max_accuracy_drop < 1,
                 f"max_accuracy_drop must be in (0, 1), got {config.callbacks.max_accuracy_drop}.")
    _require(
        config.hardware.strategy != "multi_worker" or config.output.run_name,
        "strategy multi_worker needs an explicit run_name (--run-name), the same on every "
        "worker, so that all workers write into one run.",
    )
    for section in (config.data, config.hardware, config.augment):
        for field in dataclasses.fields(section):
            choices = field.metadata.get("choices")
            if choices:
                _one_of(field.name, getattr(section, field.name), choices)
    data_sources.check_config(config)
    transfer.check_config(config)

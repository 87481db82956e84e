"""Transfer learning: start from a previous run's model or from ImageNet weights, and choose
what trains (the classic 2x2 table in EPILOG).

`load_source` reads the weights' source, `pretrained_backbone` copies every matching layer into
the chosen zoo model (a fresh head where the classes differ) and checks the layer names the
config gives, `assemble` puts the input normalization in front and the head behind,
`set_trainable` freezes per mode, and `scale_learning_rate` gives the pretrained layers that
train a smaller learning rate through the optimizer itself. All checks run before any training
and before the run directory exists.
"""

import contextlib
import dataclasses
import difflib
import hashlib
import importlib
import json
import pathlib
import zipfile

import keras
import numpy as np

import zoo
from training import checks, optimizers
from zoo.weights import weighted_layers

MODES = ("finetune", "linear_probe", "partial")
IMAGENET = "imagenet"

# --help prints this table verbatim (RawDescriptionHelpFormatter); two of its rows are wider
# than the line limit, so the limit is waived for this string alone.
EPILOG = """\
transfer learning (--init-from RUN_DIR|model.keras|imagenet), the classic 2x2 table:
                    similar to the source data                different from it
  small dataset     linear classifier on frozen features      classifier on earlier features
                      --init-from SRC --transfer linear_probe   --init-from SRC --transfer linear_probe
                                                                --feature-layer c5_conv
  large dataset     fine-tune everything (or the top layers)  fine-tune all (or train from scratch)
                      --init-from SRC                           --init-from SRC --backbone-lr-multiplier 1
                      (--transfer partial --trainable-from LAYER)
Pretrained layers that train get --backbone-lr-multiplier (default 0.1) times --lr; the new
head gets --lr. --two-phase first trains the head alone for --probe-epochs, then fine-tunes.
Every flag is also a YAML key: section.key (see the config.yaml a run saves)."""  # noqa: E501


# ---------------------------------------------------------------------------- settings


def check_config(config):
    """The transfer settings, before any data is read (layer names are checked against the
    model in `pretrained_backbone`, still before the run directory exists)."""
    transfer, init_from = config.transfer, config.model.init_from
    if transfer.mode is not None:
        checks.one_of("transfer mode", transfer.mode, MODES)
    needs_source = [
        flag
        for flag, used in (
            ("--transfer", transfer.mode is not None),
            ("--trainable-from", transfer.trainable_from is not None),
            ("--feature-layer", transfer.feature_layer is not None),
            ("--two-phase", transfer.two_phase),
        )
        if used
    ]
    checks.require(
        init_from or not needs_source,
        f"{', '.join(needs_source)} need(s) --init-from (a run directory, a "
        f"model.keras or imagenet) to transfer from.",
    )
    mode = mode_of(config)
    checks.require(
        (mode == "partial") == (transfer.trainable_from is not None),
        "--transfer partial needs --trainable-from LAYER (and --trainable-from "
        f"needs --transfer partial); got transfer {mode}, trainable_from "
        f"{transfer.trainable_from}.",
    )
    checks.require(
        transfer.backbone_lr_multiplier > 0,
        f"backbone_lr_multiplier must be positive, got {transfer.backbone_lr_multiplier}.",
    )
    if transfer.two_phase:
        checks.require(
            mode != "linear_probe",
            "--two-phase probes, then fine-tunes: use it with --transfer finetune "
            "or partial, not linear_probe.",
        )
        checks.require(
            1 <= transfer.probe_epochs < config.epochs,
            f"probe_epochs must be at least 1 and leave fine-tuning epochs of "
            f"--epochs {config.epochs}, got {transfer.probe_epochs}.",
        )
        checks.require(
            config.schedule.warmup_epochs < config.epochs - transfer.probe_epochs,
            f"warmup_epochs ({config.schedule.warmup_epochs}) must be shorter than "
            f"the fine-tuning phase ({config.epochs - transfer.probe_epochs} epochs).",
        )
    if init_from and init_from != IMAGENET:
        source_file(init_from)
    if init_from == IMAGENET:
        info = zoo.model_info(config.model.name)
        with_weights = sorted(
            name for name in zoo.list_models() if zoo.model_info(name).keras_application
        )
        checks.require(
            info.keras_application is not None,
            f"{config.model.name} has no ImageNet weights in keras.applications; "
            f"--init-from imagenet works for: {', '.join(with_weights)}.",
        )


def mode_of(config) -> str | None:
    """The transfer mode: the configured one, finetune with --init-from, None without."""
    if config.transfer.mode is not None:
        return config.transfer.mode
    return "finetune" if config.model.init_from else None


# ---------------------------------------------------------------------------- the source


@dataclasses.dataclass
class Source:
    """A zoo model holding the weights to start from, and how its inputs were normalized."""

    model: keras.Model
    record: dict  # what config.yaml records as transfer.source
    input_shape: tuple
    # The source's own standardization (mean, variance), or None for ImageNet weights, whose
    # family preprocessing goes into the model instead.
    standardization: tuple | None
    headless: bool  # ImageNet weights come without the classifier
    class_names: list | None = None  # a run's class_names.json, when it has one


def source_file(init_from) -> pathlib.Path:
    """The .keras file `init_from` names: a run directory's model.keras, or a .keras file."""
    path = pathlib.Path(init_from)
    if path.is_dir():
        path = path / "model.keras"
    checks.require(
        path.is_file() and path.suffix == ".keras",
        f"model.init_from must be a run directory holding model.keras, a .keras file, "
        f"or imagenet; got {path}.",
    )
    return path


def saved_input_shape(init_from) -> tuple | None:
    """The (height, width, channels) of the model a run directory or .keras file holds, read
    from the file's config.json (the .keras format's architecture record) without running a
    TensorFlow op: the thread pools are sized by the input before TensorFlow's first op, and
    loading the model is one. None for imagenet or a file this cannot read; load_source then
    says what is wrong with it."""
    if init_from is None or init_from == IMAGENET:
        return None
    try:
        with zipfile.ZipFile(source_file(init_from)) as archive:
            architecture = json.loads(archive.read("config.json"))
        first = architecture["config"]["layers"][0]
        shape = first["config"]["batch_shape"]
    # ValueError: source_file's ConfigError (no such file) or config.json that is not JSON.
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError, TypeError):
        return None
    if first.get("class_name") != "InputLayer" or len(shape) != 4:
        return None
    return tuple(shape[1:])


def load_source(config, imagenet_input_shape=None) -> Source:
    """The model --init-from names: a run directory, a .keras file, or ImageNet weights at
    `imagenet_input_shape` (fails at once offline, naming the file and the folder)."""
    if config.model.init_from == IMAGENET:
        return _imagenet_source(config, imagenet_input_shape)
    path = source_file(config.model.init_from)
    model = keras.saving.load_model(path, compile=False)
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    backbone = nested[0] if nested else model
    standardize = next(
        (layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)), None
    )
    run_config, run_classes = path.parent / "config.yaml", path.parent / "class_names.json"
    record = {
        "init_from": str(path.resolve()),
        "config_sha256": (
            hashlib.sha256(run_config.read_bytes()).hexdigest() if run_config.is_file() else None
        ),
    }
    standardization = (
        None
        if standardize is None
        else (
            np.asarray(standardize.mean).reshape(-1),
            np.asarray(standardize.variance).reshape(-1),
        )
    )
    return Source(
        model=backbone,
        record=record,
        input_shape=tuple(model.input_shape[1:]),
        standardization=standardization,
        headless=False,
        class_names=(json.loads(run_classes.read_text()) if run_classes.is_file() else None),
    )


@contextlib.contextmanager
def _requested_files():
    """The file names keras.applications asks its cache for (Keras does not report them)."""
    from keras.src.utils import file_utils

    names, get_file = [], file_utils.get_file

    def recording(fname=None, *args, **kwargs):
        names.append(fname)
        return get_file(fname, *args, **kwargs)

    file_utils.get_file = recording
    try:
        yield names
    finally:
        file_utils.get_file = get_file


def _imagenet_source(config, input_shape):
    with _requested_files() as names:
        # zoo.weights names the file and Keras' cache folder when the file is missing offline.
        model = zoo.create(
            config.model.name,
            input_shape=input_shape,
            include_top=False,
            weights=IMAGENET,
            **config.model.options,
        )
    return Source(
        model=model,
        record={"init_from": IMAGENET, "weights_file": names[-1]},
        input_shape=tuple(input_shape),
        standardization=None,
        headless=True,
    )


# ---------------------------------------------------------------------------- the new model


@dataclasses.dataclass
class Backbone:
    """The chosen zoo model with the source's weights, and what the new model adds."""

    model: keras.Model  # nested in the trained model; cut at --feature-layer when given
    loaded: list  # layer names whose weights came from the source
    new: list  # layer names that start fresh (inside `model` or the head behind it)
    source: Source
    feature_layer: str | None

    @property
    def loaded_layers(self):
        return [layer for layer in self.model.layers if layer.name in self.loaded]


def pretrained_backbone(config, source: Source, target: keras.Model, class_names=None) -> Backbone:
    """Copy every layer of `source` into the freshly built zoo model `target` (same names,
    same shapes). When the classes differ (by name where both are known, else by number) the
    classifier stays fresh. Raises ValueError listing the first layers that differ,
    or nearby names for a layer name of the config that the model does not have."""
    source_layers = {layer.name: layer for layer in weighted_layers(source.model)}
    source_classes, num_classes = source.model.output_shape[-1], target.output_shape[-1]
    same_classes = source_classes == num_classes and (
        None in (class_names, source.class_names) or class_names == source.class_names
    )
    classifier = [] if same_classes else classifier_layers(target)
    loaded, new, differ = [], [], []
    for layer in weighted_layers(target):
        shapes = [tuple(w.shape) for w in layer.weights]
        original = source_layers.pop(layer.name, None)
        if original is None:
            (new if source.headless else differ).append(
                layer.name if source.headless else f"{layer.name} (not in the source)"
            )
            continue
        source_shapes = [tuple(w.shape) for w in original.weights]
        if layer.name in classifier and _differ_in_classes(
            source_shapes, shapes, source_classes, num_classes
        ):
            new.append(layer.name)
        elif shapes == source_shapes:
            layer.set_weights(original.get_weights())
            loaded.append(layer.name)
        else:
            differ.append(f"{layer.name} (source {source_shapes}, {target.name} {shapes})")
    differ += [f"{name} (only in the source)" for name in source_layers]
    if differ:
        raise ValueError(
            f"--init-from {config.model.init_from}: its architecture does not match "
            f"{config.model.name} as configured; the first layers that differ: "
            f"{'; '.join(differ[:3])}. Use the same model and options as the source run."
        )
    names = [layer.name for layer in target.layers]
    trainable_from = config.transfer.trainable_from
    if trainable_from is not None:
        _find_layer(names, trainable_from, "--trainable-from")
    feature_layer = config.transfer.feature_layer
    if feature_layer is not None:
        _find_layer(names, feature_layer, "--feature-layer", prefixes=False)
        output = target.get_layer(feature_layer).output
        cut = keras.Model(target.input, output, name=target.name)
        kept = {layer.name for layer in cut.layers}
        loaded = [name for name in loaded if name in kept]
        new = list(HEAD_LAYERS)
        target = cut
    if mode_of(config) == "linear_probe" or config.transfer.two_phase:
        checks.require(
            new,
            f"--init-from {config.model.init_from} has the same {num_classes} "
            "classes, so every layer is loaded and a linear probe would train "
            "nothing: use --transfer finetune, or --feature-layer.",
        )
    return Backbone(
        model=target, loaded=loaded, new=new, source=source, feature_layer=feature_layer
    )


def classifier_layers(model) -> list:
    """The names of the layers with weights nearest each output (the zoo's `predictions_dense`),
    found through the graph: past the weightless layers (activation, dropout) behind it."""
    names = []
    for output in model.outputs:
        layer = output._keras_history.operation
        while not layer.weights and isinstance(layer.input, keras.KerasTensor):
            layer = layer.input._keras_history.operation
        names.append(layer.name)
    return names


def _differ_in_classes(source_shapes, shapes, source_classes, num_classes):
    """Shapes that differ only in a last axis of source_classes versus num_classes entries."""
    return len(shapes) == len(source_shapes) and all(
        a[:-1] == b[:-1] and (a == b or (a[-1], b[-1]) == (source_classes, num_classes))
        for a, b in zip(source_shapes, shapes)
    )


def _find_layer(names, wanted, flag, prefixes=True):
    """The first layer named `wanted` (or, with `prefixes`, whose name starts with it)."""
    for index, name in enumerate(names):
        if name == wanted or (prefixes and name.startswith(wanted)):
            return index
    candidates = names + (sorted({name.split("_")[0] for name in names}) if prefixes else [])
    close = difflib.get_close_matches(wanted, candidates, n=6, cutoff=0.4) or names[-6:]
    raise checks.ConfigError(
        f"{flag} {wanted!r} names no layer of the model{' (nor a name prefix)' if prefixes else ''}"
        f"; nearby names: {', '.join(close)}."
    )


HEAD_LAYERS = ("feature_pool", "predictions_dense", "predictions")


@keras.saving.register_keras_serializable(package="training")
class ImageNetPreprocessing(keras.layers.Layer):
    """keras.applications' `preprocess_input` of a zoo model's family, inside the model, so
    that the model takes raw 0..255 pixels like every model the trainer exports."""

    def __init__(self, model_name, **kwargs):
        super().__init__(**kwargs)
        self.model_name = model_name
        application = zoo.model_info(model_name).keras_application
        self._preprocess = importlib.import_module(application.__module__).preprocess_input

    def call(self, inputs):
        return self._preprocess(inputs)

    def get_config(self):
        return {**super().get_config(), "model_name": self.model_name}


def assemble(config, backbone: Backbone, input_shape, num_classes, mean, std) -> keras.Model:
    """Input normalization, the backbone, and (with --feature-layer) the new head.

    The input is normalized as the source's was: the pretrained features were learned on that
    scale, and a handful of new images would give noisy statistics. A source without a
    normalization layer takes the new data's mean and std, like a run from scratch.
    """
    inputs = keras.Input(shape=input_shape, name="pixels")
    if backbone.source.record["init_from"] == IMAGENET:
        x = ImageNetPreprocessing(
            config.model.name, dtype="float32", name="imagenet_preprocessing"
        )(inputs)
    else:
        if backbone.source.standardization is not None:
            mean, variance = backbone.source.standardization
        else:
            variance = np.square(np.asarray(std, "float32"))
        # float32: the statistics of 0..255 pixels lose precision in bfloat16.
        x = keras.layers.Normalization(
            mean=np.asarray(mean, "float32"),
            variance=np.asarray(variance, "float32"),
            dtype="float32",
            name="standardize",
        )(inputs)
    x = backbone.model(x)
    if backbone.feature_layer is not None:
        pool, dense, activation = HEAD_LAYERS
        if len(x.shape) == 4:
            x = keras.layers.GlobalAveragePooling2D(name=pool)(x)
        elif len(x.shape) > 2:
            x = keras.layers.Flatten(name=pool)(x)
        x = keras.layers.Dense(num_classes, name=dense)(x)
        x = keras.layers.Activation("softmax", dtype="float32", name=activation)(x)
    return keras.Model(inputs, x, name=config.model.name)


def set_trainable(model: keras.Model, backbone: Backbone, mode, trainable_from=None) -> list:
    """Freeze per `mode` (frozen BatchNorm runs in inference mode, Keras 3's rule); returns the
    paths of the pretrained variables that train, for `scale_learning_rate`."""
    layers = backbone.model.layers
    first_trainable = 0
    if mode == "partial":
        first_trainable = _find_layer(
            [layer.name for layer in layers], trainable_from, "--trainable-from"
        )
    for index, layer in enumerate(layers):
        if layer.name in backbone.new:
            layer.trainable = True
        elif mode == "linear_probe":
            layer.trainable = False
        else:
            layer.trainable = index >= first_trainable
    for layer in model.layers:
        if layer.name in HEAD_LAYERS:
            layer.trainable = True
    return [
        variable.path for layer in backbone.loaded_layers for variable in layer.trainable_weights
    ]


def trainable_params(model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


# ---------------------------------------------------------------------------- the optimizer


class ScaledLearningRate:
    """Mixin for any Keras optimizer: the variables whose paths are in `scaled_variables`
    update with `lr_multiplier` times the learning rate (the schedule's value at each step).

    Keras 3 has no per-variable learning rate or multi-optimizer, and scaling the gradients
    instead is wrong for Adam and its kin, which are invariant to the gradient's scale. The
    learning rate reaches every optimizer's `update_step` as an argument, so this scales it
    there; the decoupled weight decay (lr * weight_decay) is scaled alike, as PyTorch's
    parameter groups do. The settings are in get_config: model.keras reloads them, and
    BackupAndRestore restores the optimizer's state into the same class.
    """

    def __init__(self, *args, scaled_variables=(), lr_multiplier=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaled_variables = list(scaled_variables)
        self.lr_multiplier = float(lr_multiplier)

    def build(self, variables):
        super().build(variables)
        scaled = set(self.scaled_variables)
        # A tuple: Keras would track a list attribute of an optimizer.
        self._factors = tuple(self.lr_multiplier if v.path in scaled else 1.0 for v in variables)

    def _factor(self, variable):
        return self._factors[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor(variable)
        if factor != 1.0:
            learning_rate = learning_rate * factor
        super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        decay = self.weight_decay
        for factor in sorted({self._factor(v) for v in variables}):
            self.weight_decay = decay * factor  # read once per variable below, at trace time
            try:
                super()._apply_weight_decay([v for v in variables if self._factor(v) == factor])
            finally:
                self.weight_decay = decay

    def get_config(self):
        return {
            **super().get_config(),
            "scaled_variables": self.scaled_variables,
            "lr_multiplier": self.lr_multiplier,
        }


def _scaled_class(base):
    cls = type(f"Scaled{base.__name__}", (ScaledLearningRate, base), {})
    return keras.saving.register_keras_serializable(package="training")(cls)


# One registered class per optimizer the trainer offers, so model.keras deserializes them.
# From the classes, not instances: an optimizer made at import would start TensorFlow's
# runtime before a multi-worker strategy may configure it.
SCALED_CLASSES = {base: _scaled_class(base) for base in optimizers._CLASSES.values()}


def scale_learning_rate(optimizer, scaled_variables, lr_multiplier):
    """`optimizer` rebuilt as its ScaledLearningRate twin, same settings and schedule."""
    cls = SCALED_CLASSES[type(optimizer)]
    return cls.from_config(
        {
            **optimizer.get_config(),
            "scaled_variables": list(scaled_variables),
            "lr_multiplier": lr_multiplier,
        }
    )


# ---------------------------------------------------------------------------- two phases


@dataclasses.dataclass
class Phase:
    """One fit of a run: its mode, the config its schedule is built from, its epochs."""

    mode: str | None
    config: object
    first_epoch: int
    marker: str | None = None  # a file the finished phase leaves in the run directory


PROBE_WEIGHTS = "probe.weights.h5"


def phases(config) -> list:
    """One phase, or with --two-phase the linear probe (`probe_epochs`, no warmup) and then
    the fine-tuning with a fresh schedule over the remaining epochs. A resumed run skips a
    finished probe (it left PROBE_WEIGHTS) and resumes the phase it was in."""
    mode = mode_of(config)
    if not config.transfer.two_phase:
        return [Phase(mode, config, 0)]
    probe = config.transfer.probe_epochs
    return [
        Phase(
            "linear_probe",
            config.replace({"epochs": probe, "schedule": {"warmup_epochs": 0}}),
            0,
            marker=PROBE_WEIGHTS,
        ),
        Phase(mode, config.replace({"epochs": config.epochs - probe}), probe),
    ]

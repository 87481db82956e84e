"""`train(config)`: config -> data -> model -> compile -> fit -> evaluate once on test -> export.

Each step is a function of its own so the tuner, the tests and the CLI call the same code.
"""

import dataclasses
import inspect
import logging
import math
import os
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf
import yaml

import zoo
from training import (
    augment,
    callbacks,
    checks,
    data,
    export,
    hardware,
    optimizers,
    plots,
    probe_cache,
    rundir,
    schedules,
    transfer,
)
from training.config import TrainConfig, from_dict
from training.sub_batches import split_training_calls
from zoo import options as layer_options

log = logging.getLogger("training")

# Builder arguments the config can set, under the names the builders use.
MODEL_OVERRIDES = {
    "activation": "activation",
    "normalization": "normalization",
    "kernel_initializer": "kernel_initializer",
    "dropout": "dropout_rate",
    "l2": "weight_decay",
    "leaky_slope": "leaky_slope",
}


@dataclasses.dataclass
class RunResult:
    run_dir: pathlib.Path
    metrics: dict
    history: dict
    resumed: bool
    model: keras.Model


def dataset_label(dataset: str) -> str:
    """A short name for a dataset argument: `digits`, `mnist`, or a path's last part."""
    path = pathlib.Path(dataset)
    return path.stem if path.suffix == ".npz" else path.name or dataset


def input_shape_for(config: TrainConfig, channels: int, source_shape=None) -> tuple:
    """The model input: the requested (or the model's default) square size, the data's channels;
    a transfer source's size and channels instead of the defaults (the data is fitted to it)."""
    info = zoo.model_info(config.model.name)
    height, width = info.default_input_shape[:2]
    if source_shape is not None:
        height, width, channels = source_shape
    if config.data.image_size is not None:
        height = width = config.data.image_size
    return (height, width, channels)


def sub_batches_for(config: TrainConfig) -> int:
    """The parts each training batch is split into (hardware.resolve_sub_batches)."""
    hw = config.hardware
    return hardware.resolve_sub_batches(hw.sub_batches, config.data.batch_size, hw.threads)


def apply_threads(config: TrainConfig) -> str:
    """hardware.apply_threads for this run's input side (a transfer source's, read from its
    file), batch, precision and sub-batches; call it before TensorFlow's first op, which fixes
    the thread pools. Returns the mode in effect."""
    source_shape = transfer.saved_input_shape(config.model.init_from)
    side = input_shape_for(config, 1, source_shape)[0]  # the side does not depend on channels
    precision = hardware.resolve_precision(config.hardware.precision, config.model.name)
    return hardware.apply_threads(
        config.hardware.threads, side, config.data.batch_size, precision, sub_batches_for(config)
    )


def builder_kwargs(config: TrainConfig, input_shape, num_classes) -> dict:
    kwargs = {"input_shape": input_shape, "num_classes": num_classes}
    if config.model.binary:  # the probability of the second class
        kwargs.update(num_classes=1, classifier_activation="sigmoid")
    for field, argument in MODEL_OVERRIDES.items():
        value = getattr(config.model, field)
        if value is not None and not (field == "l2" and value == 0):
            kwargs[argument] = value
    kwargs.update(config.model.options)
    return kwargs


def create_backbone(config: TrainConfig, input_shape, num_classes) -> keras.Model:
    try:
        return zoo.create(config.model.name, **builder_kwargs(config, input_shape, num_classes))
    except TypeError as error:  # a knob this family does not have
        raise ValueError(f"{config.model.name}: {error}. Check the model options.") from None


def build_model(
    config: TrainConfig, input_shape, num_classes, mean, std, *, pretrained=None
) -> keras.Model:
    """The zoo model behind a standardization layer, so the model takes raw pixels. With
    --init-from, `pretrained` (from pretrained_backbone) or loaded here, behind the source's
    normalization (see transfer.assemble)."""
    if config.model.init_from:
        pretrained = pretrained or pretrained_backbone(config, input_shape, num_classes)
        return transfer.assemble(config, pretrained, input_shape, num_classes, mean, std)
    backbone = create_backbone(config, input_shape, num_classes)
    inputs = keras.Input(shape=input_shape, name="pixels")
    # float32: the statistics of 0..255 pixels lose precision in bfloat16.
    standardized = keras.layers.Normalization(
        mean=np.asarray(mean, "float32"),
        variance=np.square(np.asarray(std, "float32")),
        dtype="float32",
        name="standardize",
    )(inputs)
    return keras.Model(inputs, backbone(standardized), name=config.model.name)


def transfer_source(config: TrainConfig):
    """The model --init-from names (transfer.load_source; ImageNet weights at the model's
    input size), or None without --init-from."""
    if not config.model.init_from:
        return None
    return transfer.load_source(config, input_shape_for(config, 3))


def pretrained_backbone(
    config: TrainConfig, input_shape, num_classes, *, class_names=None, source=None
):
    """The zoo model with the weights --init-from names (transfer.pretrained_backbone)."""
    source = source or transfer.load_source(config, input_shape)
    target = create_backbone(config, input_shape, num_classes)
    return transfer.pretrained_backbone(config, source, target, class_names)


def compile_model(
    model,
    config: TrainConfig,
    *,
    steps_per_epoch,
    replicas,
    num_classes,
    scaled_variables=(),
    steps_per_execution=1,
    sub_batches=1,
    optimizer=None,
):
    """`scaled_variables`: paths of pretrained variables that learn at
    config.transfer.backbone_lr_multiplier times the learning rate. `steps_per_execution` is
    for `fit` (train and test) and `sub_batches` for its training steps (sub_batches_for); the
    doctor's `train_on_batch` steps keep 1 of each. `optimizer`, when given, is used instead of
    one built from the config (a model sharing another's)."""
    if optimizer is None:
        optimizer = _build_optimizer(config, replicas, steps_per_epoch, scaled_variables)
    if config.model.binary:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=config.optimizer.label_smoothing)
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy")]
    else:
        loss = keras.losses.CategoricalCrossentropy(
            label_smoothing=config.optimizer.label_smoothing
        )
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if num_classes >= 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=steps_per_execution
    )
    split_training_calls(model, sub_batches)


def build_for_fit(model, dataset):
    """Build a compiled model's loss, metrics and optimizer from `dataset`'s element shapes.

    Keras does this before `fit` only under a distribution strategy; otherwise the first trace
    of the train step creates the optimizer's (and string metrics') variables and TensorFlow
    traces the step a second time without them: the default job's first epoch took 2.0 s
    instead of 1.5 (lenet5 on the digits, this project's 2-core CPU). Keras' own
    `_symbolic_build` (private; keras is pinned) builds from symbolic tensors: no batch is read.
    """
    symbolic = tf.nest.map_structure(
        lambda spec: keras.KerasTensor(spec.shape, spec.dtype.name), dataset.element_spec
    )
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=symbolic)


def epoch_steps(dataset):
    """The batches of one pass over `dataset`, for fit's `steps_per_epoch`; None if unknown.

    Told the count, Keras (3.15) starts each epoch on the iterator it made at the end of the
    last; left to infer it, Keras makes another at every epoch's start and drops the first.
    Making a tf.data iterator instantiates the pipeline's map functions anew: 4 ms for the
    default job's training pipeline on this project's 2-core CPU, in 0.17 s epochs.
    """
    batches = int(dataset.cardinality())
    return batches if batches > 0 else None


def fit_pipeline(model, train_data, **fit_args):
    """`model.fit` on the trainer's training pipeline: the model built for it first
    (build_for_fit), the steps of an epoch given (epoch_steps), and no shuffling by Keras (the
    pipeline shuffles, seeded). The trainer and each tuner trial fit this way."""
    build_for_fit(model, train_data)
    return model.fit(train_data, steps_per_epoch=epoch_steps(train_data), shuffle=False, **fit_args)


def _build_optimizer(config: TrainConfig, replicas, steps_per_epoch, scaled_variables):
    base_lr = hardware.scaled_learning_rate(
        config.optimizer.lr, replicas, config.optimizer.scale_lr
    )
    schedule = config.schedule
    learning_rate = schedules.build_learning_rate(
        schedule.name,
        base_lr=base_lr,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=schedule.warmup_epochs,
        step_epochs=schedule.step_epochs,
        step_factor=schedule.step_factor,
        decay_rate=schedule.decay_rate,
        tau_epochs=schedule.tau_epochs,
        min_lr=schedule.min_lr,
    )
    opt = config.optimizer
    optimizer = optimizers.build_optimizer(
        opt.name,
        learning_rate,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        rho=opt.rho,
        epsilon=opt.epsilon,
        weight_decay=opt.weight_decay,
        clip_value=opt.clip_value,
        clip_norm=opt.clip_norm,
        global_clip_norm=opt.global_clip_norm,
        ema=opt.ema,
    )
    multiplier = config.transfer.backbone_lr_multiplier
    if scaled_variables and multiplier != 1.0:
        optimizer = transfer.scale_learning_rate(optimizer, scaled_variables, multiplier)
    return optimizer


def read_history(path) -> dict:
    """history.csv as per-epoch lists, or {} before the first epoch has ended."""
    return plots.read_history_csv(path) if os.path.exists(path) else {}


@dataclasses.dataclass
class PreparedData:
    """The splits fitted to the model input (unbatched uint8 pixels, int labels; data.stored,
    in memory with data.cache) and what describes them. `test` is None when it was left out
    (a search never looks at it)."""

    train: object
    validation: object
    test: object
    class_names: list
    num_examples: dict
    input_shape: tuple
    mean: np.ndarray
    std: np.ndarray
    flip_safe: bool

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def prepare_data(config: TrainConfig, *, include_test=True, source_shape=None) -> PreparedData:
    """Load the dataset, fit its images to the model input (or a transfer source's input,
    `source_shape`), measure the training split."""
    splits = data.load_dataset(
        config.data.dataset,
        data_dir=config.data.data_dir,
        manual_dir=config.data.manual_dir,
        val_split=config.data.val_split,
        test_split=config.data.test_split,
        seed=config.seed,
        classes=config.data.classes,
        subset_per_class=config.data.subset_per_class,
    )
    input_shape = input_shape_for(config, splits.image_shape[-1], source_shape)
    fit = {
        name: data.stored(
            data.fit_to_input(getattr(splits, name), input_shape, method=config.data.fit),
            cache=config.data.cache,
        )
        for name in ("train", "validation", "test")
    }
    mean, std = data.channel_statistics(fit["train"])  # the pass that fills train's cache
    return PreparedData(
        train=fit["train"],
        validation=fit["validation"],
        test=fit["test"] if include_test else None,
        class_names=list(splits.class_names),
        num_examples=dict(splits.num_examples),
        input_shape=input_shape,
        mean=mean,
        std=std,
        flip_safe=splits.flip_safe,
    )


def training_augmentation(config: TrainConfig, prepared: PreparedData):
    """The augmentation of the training batches (augment.build_augmentation), or None."""
    return augment.build_augmentation(
        config.augment.preset,
        ops=config.augment.ops or None,
        image_shape=prepared.input_shape,
        num_classes=prepared.num_classes,
        flip_safe=prepared.flip_safe,
        seed=config.seed,
        mean=prepared.mean,
    )


def make_pipelines(config: TrainConfig, prepared: PreparedData, global_batch: int) -> dict:
    """Batched tf.data pipelines of every split present; only the training one augments. Those
    read every epoch, training and validation, keep what they make in memory where the splits
    are cached and it fits (data.can_keep)."""
    augmentation = training_augmentation(config, prepared)

    def keep(name):
        return (
            name != "test"
            and config.data.cache
            and data.can_keep(prepared.num_examples[name], prepared.input_shape)
        )

    return {
        name: data.make_pipeline(
            dataset,
            batch_size=global_batch,
            num_classes=prepared.num_classes,
            training=name == "train",
            binary=config.model.binary,
            seed=config.seed,
            augment=augmentation if name == "train" else None,
            keep=keep(name),
        )
        for name, dataset in (
            ("train", prepared.train),
            ("validation", prepared.validation),
            ("test", prepared.test),
        )
        if dataset is not None and prepared.num_examples[name] > 0
    }


def cached_probe(config: TrainConfig, model, prepared: PreparedData, global_batch, strategy):
    """A linear probe's head and the frozen layers' features, computed once
    (training.probe_cache), or None, with the reason logged, where it would change the
    training: augmented batches, or random frozen layers; also under multi_worker, whose
    workers would each hold the whole dataset's features."""
    try:
        if training_augmentation(config, prepared) is not None:
            raise probe_cache.NotCacheable("the training images are augmented")
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise probe_cache.NotCacheable("multi-worker training")
        validating = prepared.num_examples["validation"] > 0
        probe = probe_cache.build(
            probe_cache.split_at_head(model),
            train=prepared.train,
            validation=prepared.validation if validating else None,
            num_examples={
                "train": prepared.num_examples["train"],
                "validation": prepared.num_examples["validation"],
            },
            batch_size=global_batch,
            pipeline_args={
                "num_classes": prepared.num_classes,
                "binary": config.model.binary,
            },
            seed=config.seed,
            verbose=callbacks.fit_verbosity(),
        )
    except probe_cache.NotCacheable as reason:
        log.info("Linear probe: the frozen layers run at every step (not cached: %s)", reason)
        return None
    log.info(
        "Linear probe: the frozen layers ran once; the head trains on their features %s",
        probe.feature_shape,
    )
    return probe


def check_splits(config: TrainConfig, prepared: PreparedData):
    """Refuse, before any training, a run whose splits cannot give what the config asks for."""
    if config.model.binary and prepared.num_classes != 2:
        raise ValueError(
            f"--binary needs a dataset of exactly two classes, but {config.data.dataset} has "
            f"{prepared.num_classes} ({', '.join(prepared.class_names[:12])}"
            f"{', ...' if prepared.num_classes > 12 else ''}): leave --binary off for a "
            f"softmax over its classes."
        )
    if prepared.num_examples["test"] == 0:
        raise ValueError(
            "the test split is empty, and a run ends by evaluating on it: set --test-split above "
            "0 (or give the dataset a test split)."
        )
    if prepared.num_examples["validation"] == 0:
        needs = [
            what
            for what, used in (
                (
                    "early stopping (--patience 0 turns it off)",
                    config.callbacks.early_stopping_patience,
                ),
                ("best.keras (--checkpoint-best false)", config.callbacks.checkpoint_best),
                ("the plateau schedule", config.schedule.name == "plateau"),
                (
                    "the val_accuracy drop stop (--max-val-drop)",
                    config.callbacks.max_val_drop is not None,
                ),
            )
            if used
        ]
        if needs:
            raise ValueError(
                f"the validation split is empty (val_split {config.data.val_split}), but "
                f"{', '.join(needs)} watch the validation split: set --val-split above 0 or "
                f"turn those off."
            )


def build_fit_callbacks(
    config: TrainConfig, directory, *, monitor="val_loss", checkpoint_best=None, saved_model=None
) -> list:
    """The trainer's callbacks from the config's callbacks and schedule sections;
    `checkpoint_best` overrides the config's (the tuner keeps no best.keras), `saved_model` is
    what best.keras holds when fit runs another model (a cached probe's head)."""
    plateau = None
    if config.schedule.name == "plateau":
        plateau = {
            "factor": config.schedule.plateau_factor,
            "patience": config.schedule.plateau_patience,
            "min_lr": config.schedule.min_lr,
        }
    return callbacks.build_callbacks(
        directory,
        early_stopping_patience=config.callbacks.early_stopping_patience,
        monitor=monitor,
        stop_at_perfect_train_accuracy=config.callbacks.stop_at_perfect_accuracy,
        max_train_accuracy_drop=config.callbacks.max_accuracy_drop,
        max_val_accuracy_drop=config.callbacks.max_val_drop,
        min_delta=config.callbacks.min_delta,
        checkpoint_best=(
            config.callbacks.checkpoint_best if checkpoint_best is None else checkpoint_best
        ),
        tensorboard=config.callbacks.tensorboard,
        plateau=plateau,
        ema=config.optimizer.ema,
        saved_model=saved_model,
        # Each worker times its own writes: workers could resume from different epochs.
        checkpoint_interval=(
            0
            if config.hardware.strategy == "multi_worker"
            else config.callbacks.checkpoint_interval
        ),
    )


def _check_resumable(run_path, resolved: TrainConfig):
    saved_path = run_path / "config.yaml"
    if not saved_path.exists():
        return
    with open(saved_path) as file:
        saved = from_dict(yaml.safe_load(file)).to_dict()
    current = resolved.to_dict()
    differ = [key for key in current if key != "output" and saved[key] != current[key]]
    if differ:
        raise ValueError(
            f"{run_path} holds an interrupted run with a different config ({', '.join(differ)} "
            f"differ). Resume it with the same settings, pass --overwrite to start it over, or "
            f"choose another --run-name."
        )


def open_run_dir(config: TrainConfig, resolved: TrainConfig, strategy):
    """The run directory: chosen (and its config saved) by the chief. Other workers of a
    multi-worker run use the run name as given, which config.validate() requires there."""
    if not hardware.is_chief(strategy):
        return rundir.RunDir(
            path=pathlib.Path(config.output.output_dir) / config.output.run_name,
            resume=False,
            name=config.output.run_name,
        )
    run = rundir.resolve_run_dir(
        config.output.output_dir,
        config.output.run_name,
        default_name=f"{config.model.name}-{dataset_label(config.data.dataset)}",
        overwrite=config.output.overwrite,
    )
    if run.resume:
        _check_resumable(run.path, resolved)
    rundir.write_text_atomic(run.path / "config.yaml", resolved.to_yaml())
    return run


def evaluate(
    model,
    pipelines,
    prepared: PreparedData,
    history: dict,
    *,
    train_seconds,
    epochs_run,
    policy,
    replicas,
    threads,
    sub_batches=1,
    train_images_per_second=None,
) -> dict:
    """metrics.json: the test split, evaluated once, and what the run measured.

    `images_per_second` divides by the whole training time (tracing, validation included);
    `train_images_per_second` is the steady speed of training steps after each fit's first
    epoch (callbacks.TrainThroughput), None when no fit ran more than one epoch.
    """
    test = model.evaluate(pipelines["test"], return_dict=True, verbose=0)
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "epochs_completed": len(next(iter(history.values()), [])),
        "train_seconds": round(train_seconds, 2),
        "images_per_second": round(prepared.num_examples["train"] * epochs_run / train_seconds, 1)
        if train_seconds > 0
        else None,
        "train_images_per_second": None
        if train_images_per_second is None
        else round(train_images_per_second, 1),
        "num_examples": dict(prepared.num_examples),
        "num_classes": prepared.num_classes,
        "params": model.count_params(),
        "trainable_params": transfer.trainable_params(model),
        "precision": policy,
        "threads": threads,
        "sub_batches": sub_batches,
        "replicas": replicas,
    }
    if "top5_accuracy" in test:
        metrics["test_top5_accuracy"] = float(test["top5_accuracy"])
    if "val_loss" in history:
        best = int(np.argmin(history["val_loss"]))
        metrics["best_epoch"] = best + 1
        metrics["best_val_loss"] = history["val_loss"][best]
        metrics["best_val_accuracy"] = history.get("val_accuracy", [None] * (best + 1))[best]
    return metrics


def train(config: TrainConfig, *, extra_callbacks=()) -> RunResult:
    """Run one training job end to end and return where it landed and what it measured."""
    config.validate()
    threads = apply_threads(config)  # first: TensorFlow fixes its pools at its first op
    sub_batches = sub_batches_for(config)
    policy = hardware.resolve_precision(config.hardware.precision, config.model.name)
    hardware.apply_precision(policy)
    # The strategy first: a multi-worker strategy must exist before any other TensorFlow op.
    strategy = hardware.resolve_strategy(config.hardware.strategy)
    replicas = strategy.num_replicas_in_sync
    keras.utils.set_random_seed(config.seed)

    pretrained = None
    source = transfer_source(config)  # every transfer check before the run directory exists
    prepared = prepare_data(config, source_shape=source.input_shape if source else None)
    check_splits(config, prepared)
    global_batch = hardware.global_batch_size(config.data.batch_size, strategy)
    # Before the run directory: building the augmentation refuses ops that do not fit the data.
    pipelines = make_pipelines(config, prepared, global_batch)
    resolved = config.replace({"data": {"image_size": prepared.input_shape[0]}})
    if source:
        with strategy.scope():
            pretrained = pretrained_backbone(
                config,
                prepared.input_shape,
                prepared.num_classes,
                class_names=prepared.class_names,
                source=source,
            )
        resolved = resolved.replace(
            {"transfer": {"mode": transfer.mode_of(config), "source": source.record}}
        )
    run = open_run_dir(config, resolved, strategy)
    work_dir = pathlib.Path(hardware.worker_dir(run.path, strategy))
    log.info(
        "%s %s: %s, %d classes, %s train / %s validation / %s test, input %s, %s, threads %s, "
        "%d sub-batch(es), %d replica(s)",
        "Resuming" if run.resume else "Run",
        run.path,
        config.data.dataset,
        prepared.num_classes,
        prepared.num_examples["train"],
        prepared.num_examples["validation"],
        prepared.num_examples["test"],
        prepared.input_shape,
        policy,
        threads,
        sub_batches,
        replicas,
    )

    if pretrained:
        log.info(
            "Weights from %s: loaded %d layers (%s); new: %s",
            config.model.init_from,
            len(pretrained.loaded),
            ", ".join(pretrained.loaded),
            ", ".join(pretrained.new) or "none",
        )

    with strategy.scope():
        model = build_model(
            config,
            prepared.input_shape,
            prepared.num_classes,
            prepared.mean,
            prepared.std,
            pretrained=pretrained,
        )

    started = time.perf_counter()
    epochs_run = 0
    throughput = callbacks.TrainThroughput(prepared.num_examples["train"])
    for phase in transfer.phases(config):
        marker = phase.marker and run.path / phase.marker
        if marker and marker.exists():  # a resumed run whose probe had finished
            model.load_weights(marker)
            continue
        with strategy.scope():
            scaled = (
                transfer.set_trainable(
                    model, pretrained, phase.mode, config.transfer.trainable_from
                )
                if pretrained
                else ()
            )
            probe = (
                cached_probe(config, model, prepared, global_batch, strategy)
                if phase.mode == "linear_probe"
                else None
            )
            fitted = probe.head if probe else model
            settings = {
                "steps_per_epoch": math.ceil(prepared.num_examples["train"] / global_batch),
                "replicas": replicas,
                "num_classes": prepared.num_classes,
                "scaled_variables": scaled,
                "steps_per_execution": hardware.steps_per_execution(
                    config.hardware.steps_per_execution, strategy
                ),
                # The probe's head trains on cached features: nothing there to split.
                "sub_batches": 1 if probe else sub_batches,
            }
            compile_model(fitted, phase.config, **settings)
            if fitted is not model:  # evaluated and saved after the fit, with the head's state
                compile_model(model, phase.config, **settings, optimizer=fitted.optimizer)
        log.info(
            "%s%s: %s parameters, %s trainable",
            model.name,
            f" ({phase.mode})" if phase.mode else "",
            f"{model.count_params():,}",
            f"{transfer.trainable_params(model):,}",
        )
        fitted._initial_epoch = None  # BackupAndRestore of an earlier phase leaves it set
        train_data = probe.train if probe else pipelines["train"]
        fit_history = fit_pipeline(
            fitted,
            train_data,
            validation_data=probe.validation if probe else pipelines.get("validation"),
            initial_epoch=phase.first_epoch,
            epochs=phase.first_epoch + phase.config.epochs,
            callbacks=build_fit_callbacks(config, work_dir, saved_model=model)
            + [throughput, *extra_callbacks],
            verbose=callbacks.fit_verbosity(),
        )
        epochs_run += len(fit_history.epoch)
        if marker and hardware.is_chief(strategy):
            partial = marker.with_name(f"partial-{marker.name}")  # written whole, then moved in
            model.save_weights(partial)
            os.replace(partial, marker)
    train_seconds = time.perf_counter() - started
    # The CSV holds every epoch, also those before a resume, which fit's History lacks.
    history = read_history(work_dir / "history.csv") or fit_history.history
    metrics = evaluate(
        model,
        pipelines,
        prepared,
        history,
        train_seconds=train_seconds,
        epochs_run=epochs_run,
        policy=policy,
        replicas=replicas,
        threads=threads,
        sub_batches=sub_batches,
        train_images_per_second=throughput.images_per_second,
    )
    log.info(
        "test accuracy %.4f, loss %.4f after %d epochs (%.1f s, %s images/s)",
        metrics["test_accuracy"],
        metrics["test_loss"],
        metrics["epochs_completed"],
        train_seconds,
        metrics["images_per_second"],
    )

    if hardware.is_chief(strategy):
        export.export_model(model, run.path, class_names=prepared.class_names, fit=config.data.fit)
        if history:
            plots.plot_curves(
                history,
                run.path / "curves.png",
                title=f"{config.model.name} on {dataset_label(config.data.dataset)}",
            )
        rundir.write_json_atomic(run.path / "metrics.json", metrics)
        rundir.mark_finished(run.path)
    return RunResult(
        run_dir=run.path, metrics=metrics, history=history, resumed=run.resume, model=model
    )


# Builder arguments the trainer sets itself, never through model.options.
TRAINER_SET_ARGUMENTS = ("input_shape", "num_classes", "weights")


def check_builder_arguments(model_name, arguments):
    """Refuse argument names the model's builder does not take. Builders that still take
    **kwargs cannot say, and are skipped."""
    parameters = inspect.signature(zoo.get_builder(model_name)).parameters
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        return
    valid = sorted(
        name
        for name, p in parameters.items()
        if p.kind == p.KEYWORD_ONLY and name not in ("name", *TRAINER_SET_ARGUMENTS)
    )
    for argument in arguments:
        checks.require(
            argument in valid,
            f"{model_name} has no option {argument!r}; its options are {', '.join(valid)}.",
        )


def check_config(config):
    # keras.utils.set_random_seed seeds NumPy too, which takes only [0, 2**32 - 1].
    checks.in_range("seed", config.seed, 0, 2**32 - 1, high_open=False, integer=True)
    model = config.model
    checks.one_of("model", model.name, zoo.list_models())
    info = zoo.model_info(model.name)
    image_size = config.data.image_size
    checks.require(
        image_size is None or image_size >= info.min_input_size,
        f"data.image_size {image_size} is below {model.name}'s minimum input of "
        f"{info.min_input_size}x{info.min_input_size}.",
    )
    for field, names in (
        ("activation", layer_options.ACTIVATIONS),
        ("normalization", layer_options.NORMALIZATIONS),
        ("kernel_initializer", layer_options.INITIALIZERS),
    ):
        if getattr(model, field) is not None:
            checks.one_of(f"model.{field}", getattr(model, field), names)
    if model.dropout is not None:
        checks.in_range("model.dropout", model.dropout, 0, 1)
    if model.leaky_slope is not None:
        checks.in_range("model.leaky_slope", model.leaky_slope, 0, 1)
    checks.in_range("model.l2", model.l2, 0)
    for argument in TRAINER_SET_ARGUMENTS:
        checks.require(
            argument not in model.options,
            f"model.options.{argument} is set by the trainer, not an option.",
        )
    arguments = builder_kwargs(config, input_shape=None, num_classes=None)
    check_builder_arguments(model.name, set(arguments) - {"input_shape", "num_classes"})

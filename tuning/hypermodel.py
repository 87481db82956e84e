"""Hyperparameter values -> a training config -> the trainer's own steps.

The zoo builders know nothing of KerasTuner: a trial draws a value for each path of the search
space, applies them to the training config, and builds, compiles and fits through the functions
`training.train` is made of, with the data loaded once per search.
"""

import math
import pathlib
import time

import keras
import keras_tuner
import numpy as np

from training import hardware, trainer, transfer
from training.callbacks import fit_verbosity
from training.config import TrainConfig, deep_update, nested

# What a search may optimize, and which way: validation metrics only, never the test split.
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "val_top5_accuracy": "max"}
# Columns of history.csv that are not metrics of the model.
NOT_METRICS = ("epoch", "learning_rate")


def prepare_data(config: TrainConfig, source=None) -> trainer.PreparedData:
    """The trainer's data, without the test split: a search never looks at it. With a
    transfer `source` (trainer.transfer_source), fitted to its input as the trainer does."""
    return trainer.prepare_data(
        config, include_test=False, source_shape=source.input_shape if source else None
    )


def sample(hp: keras_tuner.HyperParameters, space: dict) -> dict:
    """Register every entry of `space` on `hp`; {path: value} of the active ones."""
    values = {}
    for path, entry in space.items():
        condition = {}
        if "when" in entry:
            ((parent, parent_values),) = entry["when"].items()
            condition = {"parent_name": parent, "parent_values": parent_values}
        kind, default = entry["type"], entry.get("default")
        if kind == "float" and entry.get("sampling") == "log_one_minus":
            value = _sample_one_minus(hp, path, entry, condition)
        elif kind in ("float", "int"):
            value = (hp.Float if kind == "float" else hp.Int)(
                path,
                entry["min"],
                entry["max"],
                step=entry.get("step"),
                sampling=entry.get("sampling", "linear"),
                default=default,
                **condition,
            )
        elif kind == "choice":
            value = hp.Choice(path, entry["values"], default=default, **condition)
        else:
            value = hp.Boolean(path, default=bool(default), **condition)
        if value is not None:
            values[path] = value
    return values


def _sample_one_minus(hp, path, entry, condition):
    """A value whose distance from 1 is log-uniform (momentum 0.9 ... 0.999 as 1 - m in
    0.001 ... 0.1). KerasTuner's reverse_log is not this: it is log-uniform in max + min - value.
    The tuner's own hyperparameter, named `1-<path>`, holds 1 - value."""
    default = entry.get("default")
    complement = hp.Float(
        f"1-{path}",
        1 - entry["max"],
        1 - entry["min"],
        step=entry.get("step"),
        sampling="log",
        default=None if default is None else 1 - default,
        **condition,
    )
    if complement is None:  # inactive
        return None
    # 1 - (1 - x) may land an ulp outside [min, max].
    return min(max(1 - complement, entry["min"]), entry["max"])


def apply_values(config: TrainConfig, values: dict) -> TrainConfig:
    """`config` with each `path: value` set (the paths of a search space)."""
    overrides: dict = {}
    for path, value in values.items():
        # KerasTuner hands out numpy scalars on some paths; the config wants Python values.
        value = value.item() if isinstance(value, np.generic) else value
        deep_update(overrides, nested(path, value))
    return config.replace(overrides)


class TrialHyperModel(keras_tuner.HyperModel):
    """One trial = `trial_config` with the trial's values, trained as the trainer trains.

    `trial_config` carries the per-trial epochs and patience; `objective` (e.g. val_accuracy) is
    also what early stopping watches. With a transfer `source` (the search's --init-from) each
    trial starts from its weights and freezes per the trial's transfer mode, as the trainer
    does; a linear probe runs its frozen layers at every step (no feature cache in a search).
    """

    def __init__(
        self,
        trial_config: TrainConfig,
        space: dict,
        search_data: trainer.PreparedData,
        *,
        objective: str,
        strategy,
        source=None,
    ):
        super().__init__(name=trial_config.model.name)
        self.source = source
        self.trial_config = trial_config
        self.space = space
        self.data = search_data
        self.objective = objective
        self.strategy = strategy

    def config_for(self, hp) -> TrainConfig:
        return apply_values(self.trial_config, sample(hp, self.space))

    def declare_hyperparameters(self, hp):
        sample(hp, self.space)

    def _global_batch(self, config):
        return hardware.global_batch_size(config.data.batch_size, self.strategy)

    def build(self, hp):
        config = self.config_for(hp)
        keras.utils.set_random_seed(config.seed)
        # Set per build: KerasTuner clears the Keras session before each one.
        hardware.apply_precision(config.hardware.precision, config.model.name)
        pretrained, scaled = None, ()
        if self.source is not None:
            pretrained = self.pretrained_backbone(config)
        model = trainer.build_model(
            config,
            self.data.input_shape,
            self.data.num_classes,
            self.data.mean,
            self.data.std,
            pretrained=pretrained,
        )
        if pretrained is not None:
            scaled = transfer.set_trainable(
                model, pretrained, transfer.mode_of(config), config.transfer.trainable_from
            )
        trainer.compile_model(
            model,
            config,
            steps_per_epoch=math.ceil(self.data.num_examples["train"] / self._global_batch(config)),
            replicas=self.strategy.num_replicas_in_sync,
            num_classes=self.data.num_classes,
            scaled_variables=scaled,
            steps_per_execution=hardware.steps_per_execution(
                config.hardware.steps_per_execution, self.strategy
            ),
            sub_batches=trainer.sub_batches_for(config),  # the trial's batch size decides
        )
        return model

    def pretrained_backbone(self, config):
        """The zoo model with the source's weights for `config` (trainer.pretrained_backbone);
        raises ValueError where the source does not fit it."""
        return trainer.pretrained_backbone(
            config,
            self.data.input_shape,
            self.data.num_classes,
            class_names=self.data.class_names,
            source=self.source,
        )

    def fit(self, hp, model, *, trial_dir, epochs, callbacks=(), initial_epoch=0):
        """Fit as the trainer does, into `trial_dir`; returns the metrics of the best epoch by
        the objective, plus `epochs` (run in all) and `seconds` (of this fit)."""
        config = self.config_for(hp)
        trial_dir = pathlib.Path(trial_dir)
        pipelines = trainer.make_pipelines(config, self.data, self._global_batch(config))
        fit_callbacks = _trial_callbacks(config, trial_dir, self.objective) + list(callbacks)
        started = time.perf_counter()
        trainer.fit_pipeline(
            model,
            pipelines["train"],
            validation_data=pipelines["validation"],
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=fit_callbacks,
            verbose=fit_verbosity(),
        )
        seconds = time.perf_counter() - started
        # The CSV holds every epoch, also those before a resume, which fit's History lacks.
        history = trainer.read_history(trial_dir / "history.csv")
        scores = history[self.objective]
        best = int(np.argmax(scores) if OBJECTIVES[self.objective] == "max" else np.argmin(scores))
        result = {key: values[best] for key, values in history.items() if key not in NOT_METRICS}
        result.update(epochs=len(scores), seconds=round(seconds, 1))
        return result


def _trial_callbacks(config: TrainConfig, trial_dir, objective):
    """The trainer's callbacks, watching the objective. No best.keras: KerasTuner keeps the
    best epoch's weights itself."""
    return trainer.build_fit_callbacks(config, trial_dir, monitor=objective, checkpoint_best=False)

"""What every check works on: the model, its loss and optimizer, the data as batches, fresh
copies of the model, one shared short training run, and per-layer probes.

The user's model is never changed: every check works on a copy (`keras.models.clone_model`
with the model's current weights), so a Functional or Sequential model is needed.
"""

import dataclasses
import logging
import math

import keras
import numpy as np
import tensorflow as tf

from training.data import without_autotune_thread
from training.doctor.report import Report

log = logging.getLogger("training.doctor")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work each check may do. The defaults keep the whole doctor within a few
    minutes on 2 CPU cores for the small models; tests pass smaller ones."""

    loss_batches: int = 8  # batches the initial loss and the input statistics are measured on
    overfit_steps: int = 200  # steps the model gets to memorize one batch
    learn_steps: int = 300  # the short real training run (learns, numerics)
    lr_range_steps: int = 200  # steps from 1e-7 to 10
    probe_steps: int = 20  # "after a few steps" of activations_gradients
    eval_examples: int = 2048  # validation images the learns check scores
    scan_examples: int = 100_000  # training images the data check reads (balance, duplicates)


def labels_to_classes(labels):
    """Class indices from int labels or one-hot (or smoothed, mixed) label rows."""
    labels = np.asarray(labels)
    return labels.argmax(-1) if labels.ndim == 2 else labels.astype(np.int64)


def as_batches(data, batch_size, *, shuffle, seed):
    """A batched tf.data.Dataset of (images, labels) from a dataset (batched or not) or an
    (x, y) pair of arrays, without the autotune thread (data.without_autotune_thread: the
    checks make and delete many iterators); None stays None."""
    if data is None:
        return None
    return without_autotune_thread(_batched(data, batch_size, shuffle=shuffle, seed=seed))


def _batched(data, batch_size, *, shuffle, seed):
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0]), np.asarray(data[1])
        if len(images) != len(labels):
            raise ValueError(
                f"x and y differ in length: {len(images)} images, {len(labels)} labels"
            )
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        if shuffle:
            dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size)
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(
            f"data must be a tf.data.Dataset of (images, labels) or an (x, y) pair of arrays, "
            f"got {type(data).__name__}"
        )
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(f"a dataset must yield (images, labels) pairs, its elements are {spec}")
    # An image has 3 dimensions (H, W, C) or, flattened, 1; a batch has one more.
    return data if spec[0].shape.rank in (2, 4) else data.batch(batch_size)


def _loss_takes_logits(loss) -> bool:
    config = loss.get_config() if hasattr(loss, "get_config") else {}
    return bool(config.get("from_logits", False))


def _strip_regularization(layer):
    """A copy of `layer` without weight penalties and with dropout off."""
    config = layer.get_config()
    for key in config:
        if key.endswith("_regularizer"):
            config[key] = None
    if isinstance(layer, keras.layers.Dropout) or "dropout" in type(layer).__name__.lower():
        config["rate"] = 0.0
    return layer.__class__.from_config(config)


class Examination:
    """The model and data under examination, shared by the checks of one `examine` call."""

    def __init__(
        self, model, train, validation, test, augmented, *, loss, optimizer, budget, class_names
    ):
        if not isinstance(model, keras.Model) or not model.built or not model.inputs:
            raise ValueError("examine needs a built Functional or Sequential keras.Model")
        self.model = model
        self.num_classes = int(model.outputs[0].shape[-1])
        if len(model.outputs) != 1 or self.num_classes < 2:
            raise ValueError(
                f"examine needs a classifier with one output of K >= 2 class scores, the model "
                f"has outputs {[tuple(o.shape) for o in model.outputs]}"
            )
        self.train, self.validation, self.test = train, validation, test
        self.augmented = augmented if augmented is not None else train
        self.budget = budget
        self.class_names = class_names or [str(k) for k in range(self.num_classes)]
        self.initial_weights = model.get_weights()
        one_hot = train.element_spec[1].shape.rank == 2
        loss = loss if loss is not None else getattr(model, "loss", None)
        if loss is None:
            loss = (
                keras.losses.CategoricalCrossentropy()
                if one_hot
                else keras.losses.SparseCategoricalCrossentropy()
            )
        self.loss = keras.losses.get(loss) if isinstance(loss, str) else loss
        if not callable(self.loss):
            raise TypeError(f"examine needs one loss for one output, got {loss!r}")
        self.loss_takes_logits = _loss_takes_logits(self.loss)
        optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        self.optimizer_config = keras.optimizers.serialize(
            optimizer if optimizer is not None else keras.optimizers.Adam(1e-3)
        )
        self._run = None
        self.report = Report()

    @property
    def findings(self) -> dict:
        return self.report.findings

    def mean_loss(self, labels, predicted):
        """The loss over a batch (a loss function, unlike a Loss object, gives one per image)."""
        return keras.ops.mean(self.loss(labels, predicted))

    # ------------------------------------------------------------------ optimizer and copies

    def new_optimizer(self, learning_rate=None):
        """A fresh optimizer as configured, or with `learning_rate` (a float or schedule)."""
        optimizer = keras.optimizers.deserialize(self.optimizer_config)
        if learning_rate is None:
            return optimizer
        inner = getattr(optimizer, "inner_optimizer", None)  # a LossScaleOptimizer's own
        base = inner if inner is not None else optimizer
        fresh = base.__class__.from_config({**base.get_config(), "learning_rate": learning_rate})
        if inner is None:
            return fresh
        return keras.optimizers.LossScaleOptimizer(fresh, initial_scale=optimizer.initial_scale)

    def configured_learning_rate(self, steps) -> float:
        """The highest learning rate the configured optimizer uses in its first `steps` steps
        (a warmup starts low, so its first value says little)."""
        optimizer = self.new_optimizer()
        rate = getattr(optimizer, "inner_optimizer", optimizer).get_config()["learning_rate"]
        if isinstance(rate, dict):
            schedule = keras.optimizers.schedules.deserialize(rate)
            return max(float(schedule(step)) for step in np.linspace(0, steps, 11).astype(int))
        return float(rate)

    def copy(self, weights=None, *, regularized=True, learning_rate=None, compiled=True):
        """A fresh copy of the model holding `weights` (default: the model's own), compiled
        with a fresh optimizer. `regularized=False` drops dropout and weight penalties."""
        clone = keras.models.clone_model(
            self.model,
            recursive=True,
            clone_function=None if regularized else _strip_regularization,
        )
        clone.set_weights(self.initial_weights if weights is None else weights)
        if compiled:
            clone.compile(
                optimizer=self.new_optimizer(learning_rate), loss=self.loss, metrics=["accuracy"]
            )
        return clone

    # ------------------------------------------------------------------ data

    def batches(self, dataset, count):
        """The first `count` batches of `dataset` as numpy (images, labels)."""
        pairs = [(np.asarray(x), np.asarray(y)) for x, y, *_ in dataset.take(count)]
        if not pairs:
            raise ValueError("the data holds no batches")
        return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])

    def examples(self, dataset, limit):
        """Batches of `dataset` as numpy until `limit` examples, then stop."""
        seen = 0
        for x, y, *_ in dataset:
            if seen >= limit:
                return
            yield np.asarray(x), np.asarray(y)
            seen += len(x)

    # ------------------------------------------------------------------ the short run

    def training_run(self, steps):
        """The shared short run on the augmented training data, advanced to `steps` steps.
        Checks that look at a trained model share it, so it is paid for once."""
        if self._run is None:
            self._run = TrainingRun(
                self.copy(), self.augmented.repeat(), snapshot_at=self.budget.probe_steps
            )
        self._run.advance(steps)
        return self._run

    # ------------------------------------------------------------------ probes

    def gradients(self, model, images, labels):
        """{layer: RMS of the gradients of its trainable weights}, in layer order."""
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.mean_loss(labels, model(images, training=True))
        grads = tape.gradient(loss, variables)
        by_path = {v.path: g for v, g in zip(variables, grads) if g is not None}
        result = {}
        for layer in weighted_layers(model):
            squares = sum(
                float(tf.reduce_sum(tf.square(tf.cast(by_path[v.path], tf.float64))))
                for v in layer.trainable_weights
                if v.path in by_path
            )
            count = sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
            result[layer.name] = math.sqrt(squares / count)
        return result


class TrainingRun:
    """A copy of the model trained step by step with `train_on_batch`, which (unlike `fit`'s
    running means) gives each step's own loss; it keeps the weights after `snapshot_at` steps."""

    def __init__(self, model, batches, *, snapshot_at):
        self.model = model
        self.iterator = iter(batches)
        self.snapshot_at = snapshot_at
        self.snapshot = None
        self.losses = []
        self.first_nonfinite = None  # the 1-based step whose loss was NaN or infinite

    @property
    def steps(self):
        return len(self.losses)

    def advance(self, steps):
        if self.steps < steps and self.first_nonfinite is None:
            log.info("doctor: training %d steps", steps - self.steps)
        while self.steps < steps and self.first_nonfinite is None:
            images, labels, *_ = next(self.iterator)
            loss = float(self.model.train_on_batch(images, labels, return_dict=True)["loss"])
            self.losses.append(loss)
            if not math.isfinite(loss):
                self.first_nonfinite = self.steps  # nothing more to learn from a NaN
            if self.steps == self.snapshot_at:
                self.snapshot = self.model.get_weights()
        return self


# ---------------------------------------------------------------------- layers of nested models


def _nested_input(layer):
    # A nested model's `.input` is its own Input; what the outer graph feeds it sits on its
    # first inbound node (Keras has no public accessor for it). Nested models with one input.
    return layer._inbound_nodes[0].input_tensors[0]


def flat_layers(model):
    """The layers of `model` in order, nested Functional/Sequential models opened up."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from flat_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def weighted_layers(model):
    return [layer for layer in flat_layers(model) if layer.trainable_weights]


def layer_inputs_and_outputs(model, images, chosen):
    """{layer: (input, output)} as numpy for the `chosen` layers (possibly inside nested
    models) when `model` is called on `images` in training mode."""
    found = {}
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    here = [layer for layer in model.layers if layer in chosen]
    # Named outputs: a dict keeps its structure where a one-element list would be unwrapped.
    targets = {f"in{i}": layer.input for i, layer in enumerate(here)}
    targets.update({f"out{i}": layer.output for i, layer in enumerate(here)})
    targets.update({f"fed{i}": _nested_input(layer) for i, layer in enumerate(inner)})
    if not targets:
        return found
    values = keras.Model(model.inputs, targets)([images], training=True)
    for i, layer in enumerate(here):
        found[layer] = (np.asarray(values[f"in{i}"]), np.asarray(values[f"out{i}"]))
    for i, layer in enumerate(inner):
        found.update(layer_inputs_and_outputs(layer, values[f"fed{i}"], chosen))
    return found

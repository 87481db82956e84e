"""A linear probe on cached features: the frozen layers run once over the training and
validation images, and the epochs train the head alone on what they computed.

Keras has no such mode (`fit` runs the whole model every step, frozen layers included), so
this splits the model at the input of its first trainable layer: `features` holds every layer
before it, `head` the rest, sharing the model's layers and variables. The split is exact only
when the features part is deterministic in training (frozen BatchNorm runs in inference mode;
a Dropout there would not be), and the batches must be the ones the pipeline would give, so
the cache is used only when the training data is not augmented. Otherwise the probe runs
the whole model each step, as before, and the trainer logs why.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from training import data

# Above this the features stay uncached: a probe on a large early feature map of a large
# dataset would rather recompute than hold it in memory.
MAX_CACHE_BYTES = 2 * 1024**3


class NotCacheable(ValueError):
    """The model cannot be split into deterministic frozen features and a trainable head."""


@dataclasses.dataclass
class CachedProbe:
    head: keras.Model  # the model's trainable end, taking the cached features
    train: tf.data.Dataset  # (features, labels), reshuffled each epoch like the pipeline
    validation: tf.data.Dataset | None
    feature_shape: tuple


def _is_random(layer) -> bool:
    """Keras 3 layers that draw random numbers in training (Dropout, GaussianNoise, random
    preprocessing) hold a SeedGenerator."""
    if isinstance(layer, keras.Model):
        return any(_is_random(inner) for inner in layer.layers)
    return any(isinstance(value, keras.random.SeedGenerator) for value in vars(layer).values())


def _producer(tensor):
    return tensor._keras_history.operation


def _call_inputs(layer):
    """The tensor `layer` was called on in its enclosing functional graph."""
    (tensor,) = layer._inbound_nodes[-1].input_tensors
    return tensor


def split_at_head(model: keras.Model) -> tuple:
    """(features, head) with head(features(x)) == model(x): `features` holds every layer
    before the first one with trainable weights (nested models are split inside), less the
    random layers just before it, which stay in the head. Raises NotCacheable when no layer
    trains, when a frozen layer is random, or when the head is not a chain after the cut."""
    first = next((layer for layer in model.layers if layer.trainable_weights), None)
    if first is None:
        raise NotCacheable("no layer trains")
    if isinstance(first, keras.Model) and first.layers:
        inner_features, inner_head = split_at_head(first)
        features = keras.Model(model.input, inner_features(_call_inputs(first)))
        _check_deterministic(features)
        head_in = keras.Input(shape=inner_head.input.shape[1:], dtype=inner_head.input.dtype)
        x = inner_head(head_in)
        outer_out = first._inbound_nodes[-1].output_tensors[0]
        if outer_out is not model.output:
            x = _sub_model(outer_out, model.output)(x)
        return features, keras.Model(head_in, x, name=f"{model.name}_head")
    cut = _call_inputs(first)
    while _is_random(_producer(cut)):
        cut = _call_inputs(_producer(cut))
    features = keras.Model(model.input, cut, name=f"{model.name}_features")
    _check_deterministic(features)
    return features, _sub_model(cut, model.output, name=f"{model.name}_head")


def _sub_model(inputs, outputs, name=None):
    try:
        return keras.Model(inputs, outputs, name=name)
    except ValueError as error:  # a branch after the cut needs a tensor before it
        raise NotCacheable(f"the layers after the cut are not a chain ({error})") from error


def _check_deterministic(features):
    random = [layer.name for layer in features.layers if _is_random(layer)]
    if random:
        raise NotCacheable(f"random layers among the frozen ones: {', '.join(random)}")


def _features_and_labels(features, dataset, pipeline_args, verbose):
    """The features of every example, in the dataset's order (unshuffled), and its labels."""
    ordered = data.make_pipeline(dataset, training=False, **pipeline_args)
    computed = features.predict(ordered.map(lambda images, labels: images), verbose=verbose)
    labels = np.concatenate([labels for _, labels in ordered.as_numpy_iterator()])
    return np.asarray(computed, "float32"), labels


def build(
    split, *, train, validation, num_examples, batch_size, pipeline_args, seed, verbose
) -> CachedProbe:
    """The cached probe of a model split by `split_at_head`: the features of the train and
    validation splits (tf.data datasets of (image, label) examples, as `data.make_pipeline`
    takes them; `num_examples` counts each) in one inference pass, batched like the training
    pipeline, which shuffles with `seed` the same way."""
    features, head = split
    feature_shape = tuple(features.output.shape[1:])
    total = sum(num_examples.values())
    size = total * int(np.prod(feature_shape)) * 4
    if size > MAX_CACHE_BYTES:
        raise NotCacheable(
            f"the features of {total:,} images take {size / 2**30:.1f} GiB, "
            f"above {MAX_CACHE_BYTES / 2**30:.0f}"
        )
    both = train if validation is None else train.concatenate(validation)
    computed, labels = _features_and_labels(
        features, both, {"batch_size": batch_size, **pipeline_args}, verbose
    )
    count = num_examples["train"]
    train_examples = tf.data.Dataset.from_tensor_slices((computed[:count], labels[:count]))
    # As data.make_pipeline shuffles: the same buffer, seed and reshuffling, so the same batches.
    train_examples = train_examples.shuffle(
        data.SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True
    )
    validation_examples = None
    if validation is not None:
        validation_examples = data.without_autotune_thread(
            tf.data.Dataset.from_tensor_slices((computed[count:], labels[count:])).batch(batch_size)
        )
    return CachedProbe(
        head=head,
        train=data.without_autotune_thread(
            train_examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        ),
        validation=validation_examples,
        feature_shape=feature_shape,
    )

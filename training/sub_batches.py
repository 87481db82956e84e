"""Training steps over a batch split into parts whose forward and backward passes run side by side.

With one thread per op (`hardware` threads one_per_op) a training step is mostly a chain of ops
each waiting for the one before, so one core works while the other waits for the backward's few
independent pairs (on a 2-core CPU, resnet20 at batch 32 kept 1.56 cores busy). The same step
over two halves of the batch is two independent chains, which TensorFlow's executor runs on its
two threads at once: training images/s 1.2-1.5x those of the whole batch (docs/speed.md).

What changes: the loss, the metrics and the gradients are those of the whole batch (the model's
outputs for the parts are put back together before Keras computes them), except that each
BatchNormalization layer normalizes each part by that part's own statistics and updates its
moving statistics once per part, as it would with the batch split across devices. Models
without BatchNormalization compute what they would on the whole batch (in another summation
order). Inference, evaluation, saving and export see the model unchanged.

Keras has no hook for the forward pass of a training step alone (overriding `train_step` would
copy Keras' whole step), so `split_training_calls` wraps the model's `call` on the instance,
for training calls only.
"""

import functools

import keras
import tensorflow as tf


def part_bounds(size, parts):
    """The [start, stop) rows of each part of a batch of `size` rows: as even as can be, in
    order, covering the batch once."""
    return [(i * size // parts, (i + 1) * size // parts) for i in range(parts)]


def split_training_calls(model: keras.Model, parts: int) -> None:
    """Make `model`'s training calls run on `parts` parts of the batch and concatenate the
    outputs; 1 restores the whole-batch call. Calling it again replaces the earlier split."""
    vars(model).pop("call", None)  # the class's call again
    if parts == 1:
        return
    whole_call = model.call

    @functools.wraps(whole_call)
    def call(inputs, training=None, mask=None, **kwargs):
        if training is not True:
            return whole_call(inputs, training=training, mask=mask, **kwargs)
        size = tf.shape(keras.tree.flatten(inputs)[0])[0]
        outputs = []
        for start, stop in part_bounds(size, parts):
            # A batch smaller than `parts` leaves some parts empty, and BatchNormalization's
            # statistics of no rows are NaN: such a part runs on one row and keeps none.
            part = keras.tree.map_structure(
                lambda tensor, start=start, stop=stop: tensor[start : tf.maximum(stop, start + 1)],
                inputs,
            )
            output = whole_call(part, training=True, mask=mask, **kwargs)
            outputs.append(
                keras.tree.map_structure(lambda tensor, rows=stop - start: tensor[:rows], output)
            )
        return keras.tree.map_structure(lambda *pieces: tf.concat(pieces, axis=0), *outputs)

    model.call = call

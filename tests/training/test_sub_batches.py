"""Training calls over a batch split into parts: the whole batch's outputs and gradients where
nothing couples the examples, each part's own BatchNorm statistics where something does, and
the model unchanged for inference, saving and export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.sub_batches import part_bounds, split_training_calls


def images(count, shape=(32, 32, 1), seed=0):
    return np.random.default_rng(seed).normal(size=(count, *shape)).astype("float32")


def loss_and_gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    return loss, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("size, parts", [(32, 2), (29, 2), (7, 3), (1, 2), (2, 2)])
def test_parts_cover_the_batch_once_in_order(size, parts):
    bounds = part_bounds(size, parts)
    assert len(bounds) == parts
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
    assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_without_batchnorm_the_split_step_is_the_whole_batchs():
    model = zoo.create("lenet5", input_shape=(32, 32, 1), num_classes=10)  # no BatchNorm
    x, y = images(29), np.eye(10, dtype="float32")[np.arange(29) % 10]  # an odd last batch
    whole_loss, whole_gradients = loss_and_gradients(model, x, y)
    split_training_calls(model, 2)
    split_loss, split_gradients = loss_and_gradients(model, x, y)
    np.testing.assert_allclose(split_loss, whole_loss, rtol=1e-6)
    for split, whole in zip(split_gradients, whole_gradients, strict=True):
        np.testing.assert_allclose(split, whole, rtol=1e-4, atol=1e-6)


def batchnorm_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.5)(inputs))


def test_batchnorm_normalizes_each_part_by_its_own_statistics():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(10, 4)).astype("float32")
    reference, model = batchnorm_model(), batchnorm_model()
    # The reference sees the two halves one after the other, as two devices would see them.
    expected = np.concatenate([reference(x[:5], training=True), reference(x[5:], training=True)])
    split_training_calls(model, 2)
    np.testing.assert_allclose(model(x, training=True), expected, atol=1e-5)
    # The moving statistics were updated once per part, in order.
    for got, want in zip(model.non_trainable_weights, reference.non_trainable_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    # Inference normalizes by the moving statistics, whole, as before.
    np.testing.assert_allclose(
        model(x, training=False), reference(x, training=False), rtol=1e-6, atol=1e-6
    )


def test_a_batch_smaller_than_the_parts_never_normalizes_an_empty_part():
    model = batchnorm_model()
    split_training_calls(model, 2)
    one = model(np.ones((1, 4), "float32"), training=True)
    assert one.shape == (1, 4)
    for weight in model.non_trainable_weights:  # NaN from the statistics of no rows would stick
        assert np.all(np.isfinite(weight.numpy()))


def test_splitting_again_replaces_the_split_and_one_part_restores_the_whole_call():
    x = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    model = batchnorm_model()
    split_training_calls(model, 4)
    split_training_calls(model, 2)  # two parts, not four parts of two
    halves = [batchnorm_model()(part, training=True) for part in (x[:4], x[4:])]
    np.testing.assert_allclose(model(x, training=True), np.concatenate(halves), atol=1e-5)
    split_training_calls(model, 1)
    assert "call" not in vars(model)
    np.testing.assert_allclose(
        model(x, training=True), batchnorm_model()(x, training=True), atol=1e-5
    )


def test_a_split_model_fits_saves_and_reloads_unchanged(tmp_path):
    model = zoo.create("resnet20", input_shape=(16, 16, 3), num_classes=10)
    x, y = images(12, (16, 16, 3)), np.eye(10, dtype="float32")[np.arange(12) % 10]
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    split_training_calls(model, 2)
    history = model.fit(x, y, batch_size=5, epochs=2, verbose=0)  # batches of 5, 5 and 2
    assert np.all(np.isfinite(history.history["loss"]))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert "call" not in vars(reloaded)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )

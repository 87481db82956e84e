"""The zoo's BatchNormalization on TensorFlow's fused kernel computes what Keras' own does:
outputs, moving statistics and gradients, in float32 and mixed bfloat16, and saves and reloads."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.layers import FusedBatchNormalization

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(2.0, 3.0, (4, 5, 6, 7)).astype("float32")


def twins(**config):
    """A Keras BatchNormalization and ours, built alike, with random parameters and statistics."""
    keras_norm = keras.layers.BatchNormalization(**config)
    fused_norm = FusedBatchNormalization(**config)
    for layer in (keras_norm, fused_norm):
        layer.build(IMAGES.shape)
    keras_norm.set_weights([RNG.uniform(0.5, 1.5, w.shape) for w in keras_norm.weights])
    fused_norm.set_weights(keras_norm.get_weights())
    return keras_norm, fused_norm


@pytest.mark.parametrize(
    "config",
    [{}, {"scale": False, "center": False}, {"momentum": 0.9, "epsilon": 1e-5}],
)
def test_training_step_matches_keras(config):
    keras_norm, fused_norm = twins(**config)
    inputs = tf.constant(IMAGES)
    results = []
    for layer in (keras_norm, fused_norm):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
            loss = tf.reduce_sum(outputs**3)  # a loss whose gradient is not constant
        gradients = tape.gradient(loss, [inputs, *layer.trainable_weights])
        results.append((outputs, gradients, layer.moving_mean, layer.moving_variance))
    (expected, expected_gradients, *expected_stats), (actual, gradients, *stats) = results
    np.testing.assert_allclose(actual, expected, atol=2e-6)
    for got, want in zip(gradients, expected_gradients, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    # The moving variance averages the biased batch variance, as Keras' does (the kernel's own
    # output is Bessel-corrected: a factor 120/119 here).
    for got, want in zip(stats, expected_stats, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_inference_and_frozen_layers_use_the_moving_statistics():
    keras_norm, fused_norm = twins()
    np.testing.assert_allclose(fused_norm(IMAGES), keras_norm(IMAGES), atol=2e-6)
    fused_norm.trainable = False  # frozen (transfer learning): inference mode even in training
    before = fused_norm.get_weights()
    np.testing.assert_allclose(fused_norm(IMAGES, training=True), keras_norm(IMAGES), atol=2e-6)
    for got, want in zip(fused_norm.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_mixed_bfloat16_keeps_bfloat16_activations():
    keras_norm, fused_norm = twins(dtype="mixed_bfloat16")
    inputs = tf.cast(IMAGES, tf.bfloat16)
    for training in (True, False):
        outputs = fused_norm(inputs, training=training)
        assert outputs.dtype == tf.bfloat16
        expected = keras_norm(inputs, training=training)
        # Within a bfloat16 rounding (8 significant bits) of Keras' result.
        np.testing.assert_allclose(
            tf.cast(outputs, tf.float32), tf.cast(expected, tf.float32), rtol=1e-2, atol=1e-2
        )
    assert fused_norm.moving_mean.dtype == "float32"


def test_inputs_the_kernel_cannot_take_fall_back_to_keras():
    features = RNG.normal(size=(8, 3)).astype("float32")
    keras_norm, fused_norm = keras.layers.BatchNormalization(), FusedBatchNormalization()
    for training in (True, False):
        np.testing.assert_array_equal(
            fused_norm(features, training=training), keras_norm(features, training=training)
        )
    channels_first = FusedBatchNormalization(axis=1)
    keras_channels_first = keras.layers.BatchNormalization(axis=1)
    np.testing.assert_array_equal(
        channels_first(IMAGES, training=True), keras_channels_first(IMAGES, training=True)
    )


def test_zoo_models_use_it_and_reload_from_keras_files(tmp_path):
    # Keras' own BatchNormalization weights load unchanged: test_mobilenet copies them from
    # keras.applications.
    model = zoo.create("resnet20")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is FusedBatchNormalization for layer in norms)
    assert model.count_params() == 271_098  # as with Keras' layer (He et al. 2016: 0.27 M)

    images = RNG.uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(images, np.array([1, 2]), epochs=1, verbose=0)  # moves the statistics
    expected = model.predict(images, verbose=0)
    path = tmp_path / "resnet20.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded.get_layer(norms[0].name)) is FusedBatchNormalization
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0), expected)


def kernel_dtypes(layer, inputs, training):
    """The T attribute of every FusedBatchNormV3 in the layer's traced call."""
    graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(inputs).graph
    return [op.get_attr("T") for op in graph.get_operations() if op.type == "FusedBatchNormV3"]


@pytest.mark.parametrize("channels, kernel_dtype", [(32, tf.bfloat16), (24, tf.float32)])
def test_bfloat16_widths_the_fast_kernel_cannot_take_are_normalized_in_float32(
    channels, kernel_dtype
):
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    images = RNG.normal(2.0, 3.0, (4, 5, 6, channels)).astype("float32")
    inputs = tf.cast(images, tf.bfloat16)
    for training in (True, False):
        assert kernel_dtypes(layer, inputs, training) == [kernel_dtype]
        outputs = layer(inputs, training=training)
        assert outputs.dtype == tf.bfloat16
    # Either way, the batch's own statistics normalize it (within bfloat16's rounding).
    normalized = tf.cast(layer(inputs, training=True), tf.float32).numpy()
    np.testing.assert_allclose(normalized.mean(axis=(0, 1, 2)), 0.0, atol=0.05)
    np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1.0, atol=0.05)

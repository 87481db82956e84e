"""The mobile blocks: depthwise-separable (MobileNet), inverted residual (MobileNetV2) and
squeeze-excitation (Hu et al. 2018)."""

import keras
import numpy as np
import pytest

from zoo import blocks
from zoo.flops import count_flops
from zoo.options import LayerOptions
from zoo.weights import copy_weights

BATCH_NORM = LayerOptions(activation="relu6")


def block_model(block, input_shape, **kwargs):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, block(inputs, options=BATCH_NORM, name="b", **kwargs))


def random_images(shape, batch=2, low=-1.0):
    return np.random.default_rng(0).uniform(low, 1.0, size=(batch, *shape)).astype("float32")


@pytest.mark.parametrize(
    "depth_multiplier, params",
    [
        # depthwise 3*3*4*m, its BN 4 * 4m, pointwise 4m*6, its BN 4 * 6
        (1, 36 + 16 + 24 + 24),
        (2, 72 + 32 + 48 + 24),
    ],
)
def test_depthwise_separable_block_shapes_and_params(depth_multiplier, params):
    model = block_model(
        blocks.depthwise_separable_block,
        (8, 8, 4),
        filters=6,
        strides=2,
        depth_multiplier=depth_multiplier,
    )
    assert model.output.shape == (None, 4, 4, 6)
    assert model.count_params() == params
    assert [type(layer).__name__ for layer in model.layers[1:]] == [
        "DepthwiseConv2D",
        "FusedBatchNormalization",
        "Activation",
        "Conv2D",
        "FusedBatchNormalization",
        "Activation",
    ]


def test_strided_depthwise_pads_like_keras_applications_on_even_inputs():
    # keras.applications.MobileNet pads ((0, 1), (0, 1)) explicitly and uses "valid".
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(inputs)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False)(x)
    reference = keras.Model(inputs, x)
    ours = keras.Model(inputs, BATCH_NORM.depthwise_conv(3, strides=2, name="dw")(inputs))
    copy_weights(reference, ours)
    images = random_images((8, 8, 4))
    np.testing.assert_allclose(ours(images), reference(images), atol=1e-6)


def test_inverted_residual_block_with_identity_shortcut():
    model = block_model(blocks.inverted_residual_block, (8, 8, 8), filters=8, expansion=6)
    assert model.output.shape == (None, 8, 8, 8)
    # expand 8*48 + BN 4*48, depthwise 9*48 + BN 4*48, project 48*8 + BN 4*8
    assert model.count_params() == 384 + 192 + 432 + 192 + 384 + 32
    assert isinstance(model.layers[-1], keras.layers.Add)
    # The shortcut adds the input: with the projection's BN zeroed, the block is the identity.
    model.get_layer("b_project_norm").gamma.assign(np.zeros(8))
    images = random_images((8, 8, 8))
    np.testing.assert_allclose(model(images), images, atol=1e-6)


@pytest.mark.parametrize("filters, strides", [(16, 1), (8, 2)])
def test_inverted_residual_block_without_shortcut_ends_linear(filters, strides):
    model = block_model(
        blocks.inverted_residual_block, (8, 8, 8), filters=filters, expansion=6, strides=strides
    )
    assert not any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    assert model.output.shape == (None, 8 // strides, 8 // strides, filters)
    assert isinstance(model.layers[-1], keras.layers.BatchNormalization)
    # A linear bottleneck: the output keeps negative values a ReLU6 would have cut.
    assert np.min(model(random_images((8, 8, 8)))) < 0


def test_inverted_residual_block_with_expansion_one_has_no_expand_conv():
    model = block_model(blocks.inverted_residual_block, (8, 8, 8), filters=8, expansion=1)
    names = [layer.name for layer in model.layers]
    assert "b_expand_conv" not in names and "b_depthwise_conv" in names
    assert model.count_params() == 9 * 8 + 32 + 8 * 8 + 32


def test_squeeze_excitation_rescales_each_channel_by_a_gate_in_0_1():
    model = block_model(blocks.squeeze_excitation, (4, 4, 32))
    # reduce 32 -> 2 (with bias), expand 2 -> 32 (with bias)
    assert model.count_params() == 32 * 2 + 2 + 2 * 32 + 32
    assert count_flops(model) == 2 * (32 * 2 + 2 * 32)
    images = random_images((4, 4, 32), low=0.1)
    gate = np.asarray(model(images)) / images
    # One gate per example and channel, the same at every position.
    np.testing.assert_allclose(gate, np.broadcast_to(gate[:, :1, :1, :], gate.shape), rtol=1e-5)
    assert np.all((gate > 0) & (gate < 1))


def test_squeeze_excitation_reduction_sets_the_bottleneck_width():
    model = block_model(blocks.squeeze_excitation, (4, 4, 32), reduction=4)
    assert model.get_layer("b_reduce").filters == 8
    tiny = block_model(blocks.squeeze_excitation, (4, 4, 3))
    assert tiny.get_layer("b_reduce").filters == 1  # never zero channels

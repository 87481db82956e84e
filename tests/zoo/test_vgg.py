"""VGG: depth table, head knobs, keras.applications weight compatibility, FLOPs."""

import gc

import keras
import numpy as np
import pytest

import zoo
from zoo.weights import copy_weights, weighted_layers

SMALL = dict(input_shape=(32, 32, 3), num_classes=10, fc_units=64)


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize("depth, convs", [(11, 8), (13, 10), (16, 13), (19, 16)])
def test_depth_counts_weight_layers(depth, convs):
    model = zoo.create(f"vgg{depth}", **SMALL)
    assert len(layers_of(model, keras.layers.Conv2D)) == convs
    assert len(layers_of(model, keras.layers.Dense)) == 3  # depth = convolutions + 3 FC
    assert [layer.filters for layer in layers_of(model, keras.layers.Conv2D)][-1] == 512
    assert len(layers_of(model, keras.layers.MaxPooling2D)) == 5
    assert not layers_of(model, keras.layers.BatchNormalization)


def test_bn_variant_normalizes_every_conv_and_keeps_its_bias():
    model = zoo.create("vgg11_bn", **SMALL)
    convs = layers_of(model, keras.layers.Conv2D)
    assert len(layers_of(model, keras.layers.BatchNormalization)) == len(convs) == 8
    assert all(conv.use_bias for conv in convs)
    assert model.get_layer("block1_conv1_norm").input is model.get_layer("block1_conv1_conv").output


def test_head_knobs():
    default = zoo.create("vgg11", input_shape=(32, 32, 3), num_classes=10)
    assert [layer.rate for layer in layers_of(default, keras.layers.Dropout)] == [0.5, 0.5]
    assert default.get_layer("fc1_dense").units == 4096

    model = zoo.create("vgg11", **SMALL, dropout_rate=0.0, activation="gelu", normalization="group")
    assert not layers_of(model, keras.layers.Dropout)
    assert model.get_layer("fc2_dense").units == 64
    assert model.get_layer("block3_conv2_act").get_config()["activation"] == "gelu"
    assert isinstance(model.get_layer("block3_conv2_norm"), keras.layers.GroupNormalization)


def test_bad_fc_units_is_rejected():
    with pytest.raises(ValueError, match="fc_units must be a positive integer, got 0"):
        zoo.create("vgg11", fc_units=0)


@pytest.mark.parametrize(
    "name, application", [("vgg16", keras.applications.VGG16), ("vgg19", keras.applications.VGG19)]
)
def test_weights_match_keras_applications(name, application):
    assert zoo.model_info(name).keras_application is application
    reference = application(
        weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None
    )
    rng = np.random.default_rng(0)
    for layer in weighted_layers(reference):  # non-zero biases, so a misplaced one shows
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(0, 0.1, size=bias.shape)])
    model = zoo.create(name, input_shape=(64, 64, 3), num_classes=10, classifier_activation=None)
    copy_weights(reference, model)
    images = rng.uniform(0, 255, size=(2, 64, 64, 3)).astype("float32")  # caffe-style range
    expected = reference.predict(images, verbose=0)
    assert np.std(expected) > 0.1  # logits that differ, not a constant
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def vgg16_description():
    description = zoo.describe("vgg16")  # the full 138M-parameter model, built once
    keras.backend.clear_session()
    gc.collect()
    return description


@pytest.mark.slow
def test_vgg16_flops_match_the_paper(vgg16_description):
    # About 15.5 G multiply-adds at 224x224 (2 FLOPs each).
    assert vgg16_description["flops"] == pytest.approx(2 * 15.5e9, rel=0.02)
    assert vgg16_description["params"] == 138_357_544

"""MobileNet v1/v2: weight compatibility with keras.applications, width knobs, FLOPs."""

import keras
import numpy as np
import pytest

import zoo
from zoo.families.mobilenet import make_divisible
from zoo.weights import copy_weights

KERAS_APPLICATIONS = {
    "mobilenet": keras.applications.MobileNet,
    "mobilenet_v2": keras.applications.MobileNetV2,
}


def calibrate_batch_norms(model, images, rng):
    """Random BN scales and shifts, and moving statistics taken from `images` (one training-mode
    pass with momentum 0), so the random network's outputs depend on its input and a mismatched
    copy would change them."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
        layer.beta.assign(rng.uniform(-0.2, 0.2, layer.beta.shape))
        layer.momentum = 0.0
    model(images, training=True)
    for layer in norms:
        layer.momentum = 0.99


@pytest.mark.parametrize(
    "name, size, knobs",
    [
        ("mobilenet", 64, {}),
        ("mobilenet", 32, {"alpha": 0.5, "depth_multiplier": 2}),
        ("mobilenet_v2", 32, {"alpha": 0.5}),
        # Odd sizes at every stride (33, 17, 9, 5, 3): "same" padding must match correct_pad.
        ("mobilenet_v2", 33, {"alpha": 1.4}),
    ],
)
def test_weights_copied_from_keras_applications_give_the_same_outputs(name, size, knobs):
    shape = (size, size, 3)
    reference = KERAS_APPLICATIONS[name](
        input_shape=shape, weights=None, classes=5, classifier_activation=None, **knobs
    )
    model = zoo.create(name, input_shape=shape, num_classes=5, classifier_activation=None, **knobs)
    assert model.count_params() == reference.count_params()
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(4, *shape)).astype("float32")
    # Statistics from more images than are compared: 4 images at 1x1 give near-zero variances
    # that amplify float32 rounding beyond any tolerance.
    calibration = rng.uniform(-1, 1, size=(64, *shape)).astype("float32")
    calibrate_batch_norms(reference, calibration, rng)
    copy_weights(reference, model)
    expected = np.asarray(reference(images))
    assert np.ptp(expected, axis=0).min() > 0.1  # the logits depend on the image
    # 1e-4: the zoo's fused BN kernel rounds differently from Keras' separate ops (measured
    # 2e-5 here); a miscopied weight moves the logits by more than 0.1.
    np.testing.assert_allclose(model(images), expected, atol=1e-4)


@pytest.mark.parametrize("name, multiply_adds", [("mobilenet", 569e6), ("mobilenet_v2", 300e6)])
def test_flops_match_the_paper(name, multiply_adds):
    flops = zoo.describe(name)["flops"]
    assert flops / 2 == pytest.approx(multiply_adds, rel=0.02)


@pytest.fixture(scope="module")
def default_models():
    """Each family at its defaults on a small input (the architecture does not depend on it)."""
    return {name: zoo.create(name, input_shape=(32, 32, 3)) for name in KERAS_APPLICATIONS}


@pytest.mark.parametrize(
    "name, knobs, features",
    [
        ("mobilenet", {"alpha": 0.5}, 512),
        ("mobilenet", {"alpha": 0.25}, 256),
        # V2 keeps 1280 features up to alpha=1 and widens them beyond.
        ("mobilenet_v2", {"alpha": 0.35}, 1280),
        ("mobilenet_v2", {"alpha": 1.4}, 1792),
    ],
)
def test_alpha_scales_the_width(name, knobs, features, default_models):
    assert default_models[name].get_layer("avg_pool").output.shape[-1] == (
        1024 if name == "mobilenet" else 1280
    )
    model = zoo.create(name, input_shape=(32, 32, 3), include_top=False, pooling="avg", **knobs)
    assert model.output.shape == (None, features)


def test_mobilenet_v2_rounds_channels_to_multiples_of_eight():
    assert make_divisible(32 * 0.35) == 16  # 8 would lose more than 10% of 11.2
    assert make_divisible(24) == 24 and make_divisible(20) == 24 and make_divisible(1792) == 1792
    model = zoo.create("mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35)
    assert model.get_layer("stem_conv").filters == 16
    assert model.get_layer("block1_project_conv").filters == 8  # int(24 * 0.35) = 8


def test_depth_multiplier_widens_the_depthwise_convs(default_models):
    assert default_models["mobilenet"].get_layer("block1_depthwise_conv").output.shape[-1] == 32
    model = zoo.create("mobilenet", input_shape=(32, 32, 3), depth_multiplier=2)
    assert model.get_layer("block1_depthwise_conv").output.shape[-1] == 64  # 32 inputs x 2


def test_mobilenet_v2_has_a_shortcut_wherever_shapes_match(default_models):
    model = default_models["mobilenet_v2"]
    adds = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]
    # Table 2: every repeat after the first of a row, in rows of 2, 3, 4, 3, 3 blocks.
    assert len(adds) == 1 + 2 + 3 + 2 + 2
    assert "block2_add" in adds and "block1_add" not in adds


def activation_names(model):
    # The last layer is the classifier's own (float32) activation.
    return {
        layer.get_config()["activation"]
        for layer in model.layers[:-1]
        if isinstance(layer, keras.layers.Activation)
    }


@pytest.mark.parametrize(
    "name, momentum, dropout_rate", [("mobilenet", 0.99, 1e-3), ("mobilenet_v2", 0.999, 0.2)]
)
def test_defaults_follow_the_reference_implementations(
    name, momentum, dropout_rate, default_models
):
    model = default_models[name]
    assert activation_names(model) == {"relu6"}
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(layer.momentum, layer.epsilon) for layer in norms} == {(momentum, 1e-3)}
    assert model.get_layer("head_dropout").rate == dropout_rate


@pytest.mark.parametrize("name", ["mobilenet", "mobilenet_v2"])
def test_cross_cutting_options_change_every_layer(name):
    model = zoo.create(
        name,
        input_shape=(32, 32, 3),
        activation="swish",
        normalization="group",
        weight_decay=1e-4,
        dropout_rate=0.0,
    )
    assert activation_names(model) == {"silu"}
    assert not any(
        isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Dropout))
        for layer in model.layers
    )
    assert any(isinstance(layer, keras.layers.GroupNormalization) for layer in model.layers)
    kernels = [
        layer
        for layer in model.layers
        if isinstance(
            layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
        )
    ]
    assert len(model.losses) == len(kernels)  # one L2 penalty per kernel


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("mobilenet", {"alpha": 0.01}, r"alpha .* must be a number >= 0.03125, got 0.01"),
        ("mobilenet_v2", {"alpha": 0}, r"alpha .* must be a positive number, got 0"),
        ("mobilenet", {"depth_multiplier": 0}, "depth_multiplier must be a positive integer"),
        ("mobilenet_v2", {"dropout_rate": 1.0}, r"dropout_rate must be in \[0, 1\)"),
    ],
)
def test_bad_knobs_say_what_is_allowed(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.create(name, input_shape=(32, 32, 3), **kwargs)

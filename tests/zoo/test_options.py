"""Cross-cutting options: leaky ReLU's slope reaches every activation of a built model."""

import keras
import numpy as np
import pytest

import zoo
from zoo.options import LayerOptions


def layers_of(model, kind):
    return [layer for layer in model.layers if type(layer) is kind]


def test_the_leaky_relu_layer_has_the_slope_of_the_options():
    layer = LayerOptions(activation="leaky_relu", leaky_slope=0.1).act(name="act")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(np.array([-2.0, 3.0]))), [-0.2, 3.0], rtol=1e-6
    )
    assert LayerOptions(activation="leaky_relu").act(name="act").negative_slope == 0.01


# Plain, residual, and squeeze-excitation blocks with dense layers (the activation sites differ).
@pytest.mark.parametrize(
    "name, shape, knobs",
    [
        ("lenet5_modern", (32, 32, 1), {}),
        ("resnet20", (8, 8, 3), {}),
        ("stagewise_cnn", (8, 8, 3), {"squeeze_excitation": True, "dense_layers": 2}),
    ],
)
def test_every_activation_of_a_leaky_model_has_the_slope(name, shape, knobs):
    relu = zoo.create(name, input_shape=shape, activation="relu", **knobs)
    sites = [
        layer.name
        for layer in layers_of(relu, keras.layers.Activation)
        if layer.get_config()["activation"] == "relu"
    ]
    assert sites  # the comparison below would be empty otherwise
    for kwargs, slope in (({}, 0.01), ({"leaky_slope": 0.3}, 0.3)):
        leaky = zoo.create(name, input_shape=shape, activation="leaky_relu", **knobs, **kwargs)
        leaky_layers = layers_of(leaky, keras.layers.LeakyReLU)
        assert [layer.name for layer in leaky_layers] == sites
        assert {layer.negative_slope for layer in leaky_layers} == {slope}
        assert leaky.count_params() == relu.count_params()


def test_other_activations_ignore_the_slope():
    model = zoo.create("lenet5_modern", leaky_slope=0.3)
    assert not layers_of(model, keras.layers.LeakyReLU)
    assert model.count_params() == 61_706


@pytest.mark.parametrize("slope", [-0.1, 1.0, "0.1", True])
def test_a_slope_outside_0_to_1_is_refused(slope):
    with pytest.raises(ValueError, match=r"leaky_slope must be a number in \[0, 1\), got"):
        zoo.create("lenet5_modern", activation="leaky_relu", leaky_slope=slope)

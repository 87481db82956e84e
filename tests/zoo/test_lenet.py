"""LeNet-5: the paper's layer sizes, Table I connections, trainable subsampling, knobs, FLOPs."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import zoo
from zoo.flops import count_flops
from zoo.layers import LECUN_C3_CONNECTIONS, PartialConnectionConv2D, TrainableSubsampling


def layer_params(model):
    return {layer.name: layer.count_params() for layer in model.layers if layer.count_params()}


def test_lenet5_layers_have_the_papers_parameter_counts():
    assert layer_params(zoo.create("lenet5")) == {
        "c1_conv": 156,
        "s2_subsample": 12,
        "c3_conv": 1_516,
        "s4_subsample": 32,
        "c5_conv": 48_120,
        "f6_dense": 10_164,
        "predictions_dense": 850,
    }


def test_lenet5_modern_has_a_full_c3_max_pooling_and_relu():
    model = zoo.create("lenet5_modern")
    assert layer_params(model)["c3_conv"] == 16 * (6 * 25 + 1)
    assert isinstance(model.get_layer("s2_pool"), keras.layers.MaxPooling2D)
    assert model.get_layer("c1_act").get_config()["activation"] == "relu"


def test_table_one_connections():
    inputs_per_map = [len(inputs) for inputs in LECUN_C3_CONNECTIONS]
    assert inputs_per_map == [3] * 6 + [4] * 9 + [6]
    assert LECUN_C3_CONNECTIONS[12:15] == ((0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5))


def test_c3_maps_see_only_their_connected_s2_maps():
    layer = PartialConnectionConv2D(LECUN_C3_CONNECTIONS, 5, bias_initializer="ones")
    for source in range(6):
        images = np.zeros((1, 14, 14, 6), dtype="float32")
        images[..., source] = np.random.default_rng(source).normal(size=(14, 14))
        outputs = keras.ops.convert_to_numpy(layer(images))
        for output, inputs in enumerate(LECUN_C3_CONNECTIONS):
            untouched = np.allclose(outputs[..., output], 1.0)  # only the bias
            assert untouched == (source not in inputs), (source, output)


def test_partial_connection_conv_equals_a_conv_with_the_masked_kernel():
    layer = PartialConnectionConv2D([[0], [0, 2], [1, 2]], (3, 3), strides=2, padding="same")
    images = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype("float32")
    outputs = keras.ops.convert_to_numpy(layer(images))
    assert [tuple(w.shape) for w in layer.weights] == [(3, 3, 5), (3,)]

    kernel = keras.ops.convert_to_numpy(layer.dense_kernel())
    connected = np.abs(kernel).sum(axis=(0, 1)) > 0
    np.testing.assert_array_equal(
        connected, [[True, True, False], [False, False, True], [False, True, True]]
    )
    conv = keras.layers.Conv2D(3, 3, strides=2, padding="same")
    conv.build(images.shape)
    conv.set_weights([kernel, layer.get_weights()[1]])
    np.testing.assert_allclose(outputs, keras.ops.convert_to_numpy(conv(images)), atol=1e-5)


def test_partial_connection_conv_config_round_trip():
    layer = PartialConnectionConv2D([[1], [0, 1]], 3, kernel_regularizer="l2", name="probe")
    clone = PartialConnectionConv2D.from_config(layer.get_config())
    assert clone.connections == ((1,), (0, 1))
    assert clone.kernel_size == (3, 3) and clone.filters == 2
    assert isinstance(clone.kernel_regularizer, keras.regularizers.L2)


@pytest.mark.parametrize(
    "connections, message",
    [
        ([], "at least one output map"),
        ([[0], []], r"connections\[1\]"),
        ([[0, 0]], "distinct"),
        ([[-1]], "non-negative"),
    ],
)
def test_partial_connection_conv_rejects_bad_tables(connections, message):
    with pytest.raises(ValueError, match=message):
        PartialConnectionConv2D(connections, 3)


def test_partial_connection_conv_rejects_a_table_wider_than_its_input():
    with pytest.raises(ValueError, match="reads input map 5, but the input has 4 channels"):
        PartialConnectionConv2D([[5]], 3)(np.zeros((1, 8, 8, 4), dtype="float32"))


def test_trainable_subsampling_is_coefficient_times_window_mean_plus_bias():
    layer = TrainableSubsampling(2)
    images = np.random.default_rng(1).normal(size=(2, 6, 4, 3)).astype("float32")
    layer.build(images.shape)
    coefficient, bias = np.array([0.5, -2.0, 3.0]), np.array([0.1, 0.0, -1.0])
    layer.set_weights([coefficient, bias])
    means = images.reshape(2, 3, 2, 2, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(images)), means * coefficient + bias, rtol=1e-5, atol=1e-6
    )
    assert TrainableSubsampling.from_config(layer.get_config()).pool_size == 2


def test_flops_match_the_papers_connection_count():
    flops = zoo.describe("lenet5")["flops"]
    # Convolution and dense multiply-adds only: C1 117,600 + C3 150,000 + C5 48,000 + F6 10,080
    # + output 840.
    assert flops == 2 * 326_520
    # The paper counts 340,908 connections, biases and subsampling included.
    assert flops == pytest.approx(2 * 340_908, rel=0.05)


def test_knobs_change_what_they_say():
    model = zoo.create(
        "lenet5",
        c3_connections="full",
        subsampling="average",
        fc_units=100,
        dropout_rate=0.3,
        activation="relu",
    )
    assert isinstance(model.get_layer("c3_conv"), keras.layers.Conv2D)
    assert isinstance(model.get_layer("s4_pool"), keras.layers.AveragePooling2D)
    assert model.get_layer("f6_dense").units == 100
    assert model.get_layer("f6_dropout").rate == 0.3
    assert model.get_layer("f6_act").get_config()["activation"] == "relu"

    normalized = zoo.create("lenet5", normalization="batch")
    for name in ("c1", "c3", "c5"):
        assert isinstance(normalized.get_layer(f"{name}_norm"), keras.layers.BatchNormalization)
    assert normalized.get_layer("c3_conv").count_params() == 1_500  # the norm replaces the bias

    decayed = zoo.create("lenet5", weight_decay=1e-4)
    assert len(decayed.losses) == 5  # L2 on the kernels of C1, C3, C5, F6 and the output


@pytest.mark.parametrize("knob", [{"c3_connections": "half"}, {"subsampling": "stochastic"}])
def test_unknown_knob_values_are_rejected(knob):
    with pytest.raises(ValueError, match="must be"):
        zoo.create("lenet5", **knob)


def test_headless_lenet_returns_c5():
    model = zoo.create("lenet5", include_top=False)
    assert model.output.shape[1:] == (1, 1, 120)
    assert count_flops(model) == 2 * (117_600 + 150_000 + 48_000)


def test_lenet5_learns_handwritten_digits():
    digits = load_digits()
    # The 8x8 digits, each pixel repeated 4x4 times: the paper's 32x32 input.
    images = np.kron(digits.images / 16.0, np.ones((1, 4, 4)))[..., None].astype("float32")
    labels = digits.target
    keras.utils.set_random_seed(0)
    model = zoo.create("lenet5")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(images[:1200], labels[:1200], batch_size=32, epochs=4, verbose=0)
    _, accuracy = model.evaluate(images[1200:], labels[1200:], verbose=0)
    assert accuracy > 0.85  # 0.92 measured; chance is 0.1

"""AlexNet: both layouts' shapes, towers and knobs, FLOPs, and the LocalResponseNormalization
block against a NumPy reference."""

import gc

import keras
import numpy as np
import pytest

import zoo
from zoo.layers import LocalResponseNormalization

SMALL = dict(num_classes=10, fc_units=32)


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def lrn_reference(a, size=5, k=2.0, alpha=1e-4, beta=0.75):
    """Section 3.3 of the paper, written as its sum over neighbouring channels."""
    channels = a.shape[-1]
    b = np.empty_like(a, dtype="float64")
    for i in range(channels):
        low, high = max(0, i - size // 2), min(channels - 1, i + size // 2)
        total = np.sum(a[..., low : high + 1].astype("float64") ** 2, axis=-1)
        b[..., i] = a[..., i] / (k + alpha * total) ** beta
    return b


# --- LocalResponseNormalization ------------------------------------------------------------


@pytest.mark.parametrize("size, k, alpha, beta", [(5, 2.0, 1e-4, 0.75), (3, 1.0, 0.5, 0.5)])
def test_lrn_matches_the_papers_formula(size, k, alpha, beta):
    # Large activations, so the normalization term is far from negligible.
    a = np.random.default_rng(0).normal(0, 30, size=(2, 4, 3, 7)).astype("float32")
    layer = LocalResponseNormalization(size=size, k=k, alpha=alpha, beta=beta)
    expected = lrn_reference(a, size, k, alpha, beta)
    assert np.abs(expected - a / k**beta).max() > 0.1  # the window sum matters here
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(a)), expected, rtol=1e-5)


def test_lrn_stays_accurate_under_bfloat16():
    # Under bfloat16, 2 + 1e-4 * 500 would round to 2; the layer computes in float32.
    keras.config.set_dtype_policy("mixed_bfloat16")
    a = np.full((1, 2, 2, 8), 10.0, dtype="float32")
    outputs = LocalResponseNormalization()(a)
    assert outputs.dtype == "bfloat16"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32")),
        lrn_reference(a),
        rtol=4e-3,
    )


def test_lrn_config_round_trip_and_validation():
    layer = LocalResponseNormalization(size=3, k=1.0, alpha=2e-5, beta=0.5, name="lrn")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.size, clone.k, clone.alpha, clone.beta, clone.name) == (3, 1.0, 2e-5, 0.5, "lrn")
    for size in (4, 0, 2.0, True):
        with pytest.raises(ValueError, match="size must be a positive odd integer"):
            LocalResponseNormalization(size=size)
    with pytest.raises(ValueError, match="k must be > 0"):
        LocalResponseNormalization(k=0)


# --- The two layouts -------------------------------------------------------------------------


def pooled_sizes(model):
    return [layer.output.shape[1] for layer in layers_of(model, keras.layers.MaxPooling2D)]


def test_torchvision_layout():
    model = zoo.create("alexnet", **SMALL)
    convs = layers_of(model, keras.layers.Conv2D)
    assert [c.filters for c in convs] == [64, 192, 384, 256, 256]
    assert [c.kernel_size[0] for c in convs] == [11, 5, 3, 3, 3]
    assert all(c.groups == 1 and c.use_bias for c in convs)
    assert model.get_layer("conv1_conv").output.shape[1:3] == (55, 55)  # 2 zeros a side
    assert pooled_sizes(model) == [27, 13, 6]
    assert model.get_layer("flatten").output.shape[-1] == 9216
    assert not layers_of(model, LocalResponseNormalization)
    # Dropout drops the inputs of FC6 and FC7.
    assert model.get_layer("fc6_dense").input is model.get_layer("fc6_dropout").output
    assert model.get_layer("fc7_dense").input is model.get_layer("fc7_dropout").output


def test_original_layout_has_two_towers_and_lrn():
    model = zoo.create("alexnet_original", **SMALL)
    assert model.input_shape == (None, 227, 227, 3)
    convs = layers_of(model, keras.layers.Conv2D)
    kernels = {conv.name: (conv.groups, tuple(conv.kernel.shape)) for conv in convs}
    assert kernels == {
        "conv1_conv": (1, (11, 11, 3, 96)),
        "conv2_conv": (2, (5, 5, 48, 256)),  # each tower's kernels see its own 48 maps
        "conv3_conv": (1, (3, 3, 256, 384)),  # conv3 reads both towers
        "conv4_conv": (2, (3, 3, 192, 384)),
        "conv5_conv": (2, (3, 3, 192, 256)),
    }
    assert model.get_layer("conv1_conv").output.shape[1:3] == (55, 55)
    assert pooled_sizes(model) == [27, 13, 6]
    # ReLU -> LRN -> max pool after conv1 and conv2 only.
    assert [layer.name for layer in layers_of(model, LocalResponseNormalization)] == [
        "conv1_lrn",
        "conv2_lrn",
    ]
    assert model.get_layer("conv1_lrn").input is model.get_layer("conv1_act").output
    assert model.get_layer("conv1_pool").input is model.get_layer("conv1_lrn").output
    # Dropout on the outputs of FC6 and FC7.
    assert model.get_layer("fc6_dropout").input is model.get_layer("fc6_act").output
    assert model.get_layer("predictions_dense").input is model.get_layer("fc7_dropout").output


def test_towers_are_independent_in_grouped_layers():
    model = zoo.create("alexnet_original", **SMALL)
    conv4 = model.get_layer("conv4_conv")
    x = np.random.default_rng(0).normal(size=(1, 13, 13, 384)).astype("float32")
    changed = x.copy()
    changed[..., 192:] += 1.0  # only the second tower's input maps
    before, after = (keras.ops.convert_to_numpy(conv4(v)) for v in (x, changed))
    np.testing.assert_array_equal(after[..., :192], before[..., :192])
    assert np.abs(after[..., 192:] - before[..., 192:]).max() > 0.1


def test_adaptive_pool_keeps_the_fc_size_for_any_input():
    sizes = [
        zoo.create("alexnet", input_shape=(s, s, 3), **SMALL).count_params() for s in (95, 224, 300)
    ]
    fc_and_classifier = (9216 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
    convs = 23_296 + 307_392 + 663_936 + 884_992 + 590_080
    assert sizes == [convs + fc_and_classifier] * 3


def test_smallest_input_predicts_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = zoo.create("alexnet", input_shape=(95, 95, 3), **SMALL)
    assert model.get_layer("conv5_pool").output.shape[1:3] == (2, 2)
    out = model.predict(np.ones((1, 95, 95, 3), "float32"), verbose=0)
    assert out.dtype == np.float32 and np.isclose(out.sum(), 1.0, atol=1e-5)


def test_knobs():
    model = zoo.create(
        "alexnet_original",
        **SMALL,
        dropout_rate=0.0,
        local_response_norm=False,
        activation="gelu",
        normalization="batch",
    )
    assert not layers_of(model, keras.layers.Dropout)
    assert not layers_of(model, LocalResponseNormalization)
    assert model.get_layer("fc7_dense").units == 32
    assert model.get_layer("conv3_act").get_config()["activation"] == "gelu"
    assert model.get_layer("conv3_norm").input is model.get_layer("conv3_conv").output
    assert not model.get_layer("conv3_conv").use_bias  # BatchNorm's beta replaces the bias

    with_lrn = zoo.create("alexnet", **SMALL, local_response_norm=True, dropout_rate=0.3)
    assert [layer.name for layer in layers_of(with_lrn, LocalResponseNormalization)] == [
        "conv1_lrn",
        "conv2_lrn",
    ]
    assert [layer.rate for layer in layers_of(with_lrn, keras.layers.Dropout)] == [0.3, 0.3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fc_units=0), "fc_units must be a positive integer, got 0"),
        (dict(local_response_norm="yes"), "local_response_norm must be None, True or False"),
        (dict(dropout_rate=1.0), "dropout_rate must be in"),
    ],
)
def test_bad_knobs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.create("alexnet", **kwargs)


def test_headless_model_ends_at_the_last_pool():
    model = zoo.create("alexnet_original", include_top=False)
    assert model.output.shape == (None, 6, 6, 256)
    assert not layers_of(model, keras.layers.Dense)


# --- FLOPs against the published figures ----------------------------------------------------
# torchvision lists AlexNet at 0.71 GFLOPS (multiply-adds); the two-tower Caffe AlexNet is
# usually quoted at 724M multiply-adds (e.g. Sze et al. 2017, "Efficient processing of deep
# neural networks", Table 3). One full-size build per model.


@pytest.mark.slow
@pytest.mark.parametrize("name, multiply_adds", [("alexnet", 0.71e9), ("alexnet_original", 724e6)])
def test_flops_match_the_published_figure(name, multiply_adds):
    described = zoo.describe(name)
    gc.collect()
    assert described["flops"] / 2 == pytest.approx(multiply_adds, rel=0.01)

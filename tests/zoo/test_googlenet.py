"""GoogLeNet: Table 1 (shapes and per-module multiply-adds), the auxiliary heads, the knobs, and
the inception_module block."""

import math

import keras
import numpy as np
import pytest

import zoo
from zoo.describe import trainable_param_count
from zoo.families.googlenet import inception_module
from zoo.flops import layer_flops
from zoo.layers import LocalResponseNormalization
from zoo.options import LayerOptions

SMALL = dict(input_shape=(65, 65, 3), num_classes=4)


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.fixture(scope="module")
def paper_model():
    return zoo.create("googlenet")


# --- inception_module ------------------------------------------------------------------------


def test_inception_module_branches():
    inputs = keras.Input((28, 28, 192))
    options = LayerOptions(normalization="none")
    outputs = inception_module(inputs, (64, 96, 128, 16, 32, 32), options=options, name="3a")
    module = keras.Model(inputs, outputs)
    assert outputs.shape == (None, 28, 28, 64 + 128 + 32 + 32)
    convs = layers_of(module, keras.layers.Conv2D)
    kernels = {conv.name: tuple(conv.kernel.shape) for conv in convs}
    assert kernels == {
        "3a_1x1_conv": (1, 1, 192, 64),
        "3a_3x3_reduce_conv": (1, 1, 192, 96),
        "3a_3x3_conv": (3, 3, 96, 128),
        "3a_5x5_reduce_conv": (1, 1, 192, 16),
        "3a_5x5_conv": (5, 5, 16, 32),  # a true 5x5, not torchvision's 3x3
        "3a_pool_proj_conv": (1, 1, 192, 32),
    }
    pool = module.get_layer("3a_pool")
    assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (1, 1), "same")
    assert module.get_layer("3a_pool_proj_conv").input is pool.output
    assert module.count_params() == sum(math.prod(k) + k[-1] for k in kernels.values()) == 163_696


def test_inception_module_concatenates_in_branch_order():
    inputs = keras.Input((5, 5, 3))
    options = LayerOptions(normalization="none", kernel_initializer="glorot_uniform")
    module = keras.Model(
        inputs, inception_module(inputs, (1, 1, 2, 1, 3, 4), options=options, name="m")
    )
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 3)).astype("float32")
    out = module.predict(x, verbose=0)
    branch = keras.Model(inputs, module.get_layer("m_5x5_act").output).predict(x, verbose=0)
    np.testing.assert_array_equal(out[..., 3:6], branch)  # after 1x1 (1) and 3x3 (2)


def test_inception_module_rejects_a_malformed_row():
    with pytest.raises(ValueError, match="filters must be .*got \\(64, 96, 128\\)"):
        inception_module(keras.Input((8, 8, 4)), (64, 96, 128), options=LayerOptions(), name="m")


# --- Table 1 and Figure 3 --------------------------------------------------------------------

# Output size and multiply-adds (millions) per row of Table 1.
TABLE_1 = {
    "conv1": ((112, 112, 64), 118),
    "conv2": ((56, 56, 192), 360),  # with its 1x1 reduce
    "3a": ((28, 28, 256), 128),
    "3b": ((28, 28, 480), 304),
    "4a": ((14, 14, 512), 73),
    "4b": ((14, 14, 512), 88),
    "4c": ((14, 14, 512), 100),
    "4d": ((14, 14, 528), 119),
    "4e": ((14, 14, 832), 170),
    # Table 1 prints 54M, but the row's own filter counts on a 7x7x832 input give 51.1M.
    "5a": ((7, 7, 832), 51),
    "5b": ((7, 7, 1024), 71),
}


def row_of(layer_name):
    if layer_name.startswith("inception_"):
        return layer_name.split("_")[1]
    return layer_name.split("_")[0]


def test_table_1_output_sizes_and_multiply_adds(paper_model):
    for row, (size, _) in TABLE_1.items():
        name = f"inception_{row}_concat" if row[0].isdigit() else f"{row}_act"
        assert paper_model.get_layer(name).output.shape[1:] == size, row
    multiply_adds = {row: 0 for row in TABLE_1}
    for layer in paper_model.layers:
        if row_of(layer.name) in multiply_adds:
            multiply_adds[row_of(layer.name)] += layer_flops(layer) / 2e6
    for row, (_, expected) in TABLE_1.items():
        assert multiply_adds[row] == pytest.approx(expected, abs=0.7), row


def test_total_flops_match_the_paper():
    # "a computational budget of 1.5 billion multiply-adds"; Table 1's rows sum to 1,586M.
    multiply_adds = zoo.describe("googlenet")["flops"] / 2
    assert multiply_adds == pytest.approx(1586e6, rel=0.01)
    assert multiply_adds == pytest.approx(1.5e9, rel=0.06)


def test_figure_3_stem_and_head(paper_model):
    lrn = layers_of(paper_model, LocalResponseNormalization)
    assert [layer.name for layer in lrn] == ["pool1_lrn", "conv2_lrn"]
    assert paper_model.get_layer("pool1_lrn").input is paper_model.get_layer("pool1").output
    assert paper_model.get_layer("pool2").input is paper_model.get_layer("conv2_lrn").output
    assert not layers_of(paper_model, keras.layers.BatchNormalization)
    assert all(conv.use_bias for conv in layers_of(paper_model, keras.layers.Conv2D))
    assert len(layers_of(paper_model, keras.layers.Conv2D)) == 3 + 9 * 6  # 22 layers deep
    assert [layer.rate for layer in layers_of(paper_model, keras.layers.Dropout)] == [0.4]
    assert paper_model.get_layer("predictions_dense").input.shape == (None, 1024)


def test_batch_norm_switch_is_the_batch_normalization_variant():
    with pytest.raises(ValueError, match="contradicts normalization='layer'"):
        zoo.create("googlenet", batch_norm=True, normalization="layer")
    small = dict(input_shape=(32, 32, 3), num_classes=10)
    assert (
        zoo.describe("googlenet", batch_norm=True, **small)["trainable_params"]
        == zoo.describe("googlenet", normalization="batch", **small)["trainable_params"]
    )


def test_batch_norm_variant():
    model = zoo.create("googlenet", batch_norm=True)
    convs = layers_of(model, keras.layers.Conv2D)
    assert len(layers_of(model, keras.layers.BatchNormalization)) == len(convs)
    assert not any(conv.use_bias for conv in convs)
    assert trainable_param_count(model) == 7_005_832


# --- Auxiliary classifiers -------------------------------------------------------------------


def test_aux_heads_at_full_size():
    model = zoo.create("googlenet", aux_logits=True)
    assert [output.shape for output in model.outputs] == [(None, 1000)] * 3
    assert model.output_names == ["predictions", "aux1_predictions", "aux2_predictions"]
    assert model.get_layer("aux1_pool").input is model.get_layer("inception_4a_concat").output
    assert model.get_layer("aux2_pool").input is model.get_layer("inception_4d_concat").output
    assert model.get_layer("aux1_pool").output.shape == (None, 4, 4, 512)
    assert model.get_layer("aux2_pool").output.shape == (None, 4, 4, 528)
    assert model.get_layer("aux1_fc_dense").units == 1024
    assert model.get_layer("aux2_dropout").rate == 0.7
    # Each head: 1x1 conv to 128, FC 4*4*128 -> 1024, FC 1024 -> 1000.
    heads = sum((c + 1) * 128 + (2048 + 1) * 1024 + (1024 + 1) * 1000 for c in (512, 528))
    assert model.count_params() == 6_998_552 + heads == 13_378_280


def test_aux_heads_save_and_reload(tmp_path):
    model = zoo.create("googlenet", **SMALL, aux_logits=True)
    images = np.random.default_rng(0).uniform(size=(2, 65, 65, 3)).astype("float32")
    model.save(tmp_path / "googlenet.keras")
    reloaded = keras.saving.load_model(tmp_path / "googlenet.keras", safe_mode=True)
    # Called eagerly: tracing predict() on this graph takes far longer than running it.
    for got, want in zip(reloaded(images), model(images)):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want)
        )


def test_aux_heads_need_their_minimum_input():
    with pytest.raises(ValueError, match="at least 65x65"):
        zoo.create("googlenet", input_shape=(64, 64, 3), aux_logits=True)
    with pytest.raises(ValueError, match="needs include_top=True"):
        zoo.create("googlenet", input_shape=(65, 65, 3), aux_logits=True, include_top=False)


def test_aux_heads_output_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = zoo.create("googlenet", **SMALL, aux_logits=True)
    outputs = [keras.ops.convert_to_numpy(o) for o in model(np.ones((1, 65, 65, 3), "float32"))]
    assert [o.dtype for o in outputs] == [np.float32] * 3
    np.testing.assert_allclose([o.sum() for o in outputs], 1.0, rtol=1e-5)


# --- Knobs -----------------------------------------------------------------------------------


def test_stages_table_sets_the_depth():
    stages = (((8, 8, 8, 4, 4, 4),), ((8, 8, 8, 4, 4, 4), (16, 8, 16, 4, 8, 8)))
    model = zoo.create("googlenet", input_shape=(32, 32, 3), num_classes=4, stages=stages)
    modules = [layer.name for layer in model.layers if layer.name.endswith("_concat")]
    assert modules == ["inception_3a_concat", "inception_4a_concat", "inception_4b_concat"]
    assert model.get_layer("predictions_dense").input.shape == (None, 16 + 16 + 8 + 8)
    assert "pool5" not in [layer.name for layer in model.layers]
    with pytest.raises(ValueError, match="no module 4d"):
        zoo.create("googlenet", input_shape=(96, 96, 3), stages=stages, aux_logits=True)
    with pytest.raises(ValueError, match="6 positive integers"):
        zoo.create("googlenet", stages=(((8, 8, 8, 4, 4),),))


def test_other_knobs():
    model = zoo.create(
        "googlenet",
        input_shape=(32, 32, 3),
        num_classes=4,
        dropout_rate=0.0,
        local_response_norm=False,
        activation="swish",
        normalization="group",
    )
    assert not layers_of(model, keras.layers.Dropout)
    assert not layers_of(model, LocalResponseNormalization)
    assert model.get_layer("inception_4c_5x5_act").get_config()["activation"] == "silu"
    assert isinstance(model.get_layer("inception_4c_5x5_norm"), keras.layers.GroupNormalization)
    aux = zoo.create("googlenet", **SMALL, aux_logits=True, aux_dropout_rate=0.5)
    rates = [aux.get_layer(name).rate for name in ("aux1_dropout", "aux2_dropout", "head_dropout")]
    assert rates == [0.5, 0.5, 0.4]

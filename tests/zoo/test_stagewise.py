"""The stagewise CNN: every knob changes the model the way it says, with exact parameter counts
worked out by hand for a small configuration, and bad values are refused with the allowed ones."""

import keras
import numpy as np
import pytest

import zoo
from zoo.describe import trainable_param_count

# The small configuration the hand counts below are for: 8x8x3 input, 2 stages of 2 convs
# (4 then 8 filters), batch norm, max pooling, global average pooling, one hidden dense layer
# of 5 units, 3 classes.
SMALL = dict(
    input_shape=(8, 8, 3), num_classes=3, num_stages=2, convs_per_stage=2, filters=4, dense_units=5
)
# convs 3*3*3*4 + 3*3*4*4 + 3*3*4*8 + 3*3*8*8; BN 4 per channel (2 trainable): 4+4+8+8 channels;
# dense 8*5+5; classifier 5*3+3
SMALL_CONVS = 108 + 144 + 288 + 576
SMALL_PARAMS = SMALL_CONVS + 4 * 24 + 45 + 18


def build(**changes):
    return zoo.create("stagewise_cnn", **{**SMALL, **changes})


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_small_configuration_matches_the_hand_count():
    model = build()
    assert model.count_params() == SMALL_PARAMS == 1275
    assert trainable_param_count(model) == SMALL_PARAMS - 2 * 24
    assert [layer.output.shape[1:] for layer in layers_of(model, keras.layers.MaxPooling2D)] == [
        (4, 4, 4),
        (2, 2, 8),
    ]


@pytest.mark.parametrize(
    "changes, params",
    [
        # a third conv per stage: 3*3*4*4 + BN 16, 3*3*8*8 + BN 32
        ({"convs_per_stage": 3}, SMALL_PARAMS + 144 + 16 + 576 + 32),
        # 5x5 kernels: every conv kernel grows by 25/9
        ({"kernel_size": 5}, SMALL_PARAMS + SMALL_CONVS * 16 // 9),
        # a third stage of 16 filters: 3*3*8*16 + 3*3*16*16 + BN 2*64; dense input 8 -> 16
        ({"num_stages": 3}, SMALL_PARAMS + 1152 + 2304 + 128 + 8 * 5),
        # twice the filters: convs 3*3*3*8 + 3*3*8*8 + 3*3*8*16 + 3*3*16*16, BN doubled,
        # dense 16*5+5
        ({"filters": 8}, 216 + 576 + 1152 + 2304 + 4 * 48 + 85 + 18),
        # a strided 3x3 conv (with BN) instead of each max pool: 3*3*4*4 + 16, 3*3*8*8 + 32
        ({"downsample": "strided_conv"}, SMALL_PARAMS + 144 + 16 + 576 + 32),
        ({"downsample": "avg_pool"}, SMALL_PARAMS),
        # SE with reduction 16 (at least 1 unit): 4*1+1 + 1*4+4, then 8*1+1 + 1*8+8
        ({"squeeze_excitation": True}, SMALL_PARAMS + 13 + 25),
        # flatten a 2x2x8 map: the dense layer sees 32 inputs instead of 8
        ({"head": "flatten"}, SMALL_PARAMS + 24 * 5),
        ({"head": "global_max"}, SMALL_PARAMS),
        # a second hidden dense layer 5 -> 5; or none, the classifier on the 8 pooled features
        ({"dense_layers": 2}, SMALL_PARAMS + 30),
        ({"dense_layers": 0}, SMALL_PARAMS - 45 - 18 + 27),
        ({"dense_units": 10}, SMALL_PARAMS - 45 - 18 + 90 + 33),
        # no normalization: the convs get biases (4+4+8+8) instead of BN
        ({"normalization": "none"}, SMALL_CONVS + 24 + 45 + 18),
    ],
)
def test_each_knob_changes_the_parameter_count_as_computed_by_hand(changes, params):
    assert build(**changes).count_params() == params


def test_downsample_choices_use_the_named_layer():
    assert len(layers_of(build(), keras.layers.MaxPooling2D)) == 2
    assert len(layers_of(build(downsample="avg_pool"), keras.layers.AveragePooling2D)) == 2
    strided = build(downsample="strided_conv")
    strides = [layer.strides for layer in layers_of(strided, keras.layers.Conv2D)]
    assert strides == [(1, 1), (1, 1), (2, 2)] * 2
    assert not layers_of(strided, keras.layers.MaxPooling2D)


def test_dropout_drops_the_input_of_every_dense_layer():
    model = build(dense_layers=2, dropout_rate=0.3)
    dropouts = layers_of(model, keras.layers.Dropout)
    assert [layer.rate for layer in dropouts] == [0.3, 0.3, 0.3]
    # ... pooled features, then each dense layer's input dropped, then the classifier.
    assert [layer.name for layer in model.layers[-9:-2]] == [
        "dense1_dropout",
        "dense1",
        "dense1_act",
        "dense2_dropout",
        "dense2",
        "dense2_act",
        "head_dropout",
    ]
    assert not layers_of(build(dropout_rate=0.0), keras.layers.Dropout)


def test_activation_and_weight_decay_reach_every_layer():
    model = build(activation="elu", weight_decay=1e-4, squeeze_excitation=True)
    activations = {
        layer.get_config()["activation"]
        for layer in model.layers[:-1]
        if isinstance(layer, keras.layers.Activation) and not layer.name.endswith("_gate")
    }
    assert activations == {"elu"}
    kernels = layers_of(model, (keras.layers.Conv2D, keras.layers.Dense))
    assert len(model.losses) == len(kernels) == 4 + 4 + 2


def test_headless_model_keeps_the_last_feature_map():
    model = build(include_top=False)
    assert model.output.shape == (None, 2, 2, 8)


def test_input_too_small_for_the_stages_names_the_minimum():
    with pytest.raises(ValueError, match="num_stages=4.*at least 16x16"):
        build(num_stages=4)
    assert build(num_stages=3).output.shape == (None, 3)  # 8 = 2**3 is enough


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"num_stages": 0}, "num_stages must be one of 1, 2, 3, 4, 5, 6; got 0"),
        ({"convs_per_stage": 5}, "convs_per_stage must be one of 1, 2, 3, 4; got 5"),
        ({"convs_per_stage": True}, "convs_per_stage must be one of"),
        ({"kernel_size": 4}, "kernel_size must be one of 3, 5; got 4"),
        ({"kernel_size": 3.0}, "kernel_size must be one of 3, 5; got 3.0"),
        (
            {"downsample": "stride"},
            "downsample must be one of 'max_pool', 'avg_pool', 'strided_conv'; got 'stride'",
        ),
        ({"head": "gap"}, "head must be one of 'global_avg', 'global_max', 'flatten'"),
        ({"dense_layers": 3}, "dense_layers must be one of 0, 1, 2; got 3"),
        ({"squeeze_excitation": 1}, "squeeze_excitation must be one of False, True; got 1"),
        ({"filters": 0}, "filters must be a positive integer, got 0"),
        ({"dense_units": 2.5}, "dense_units must be a positive integer, got 2.5"),
        ({"dropout_rate": -0.1}, r"dropout_rate must be in \[0, 1\)"),
        ({"normalization": "batchnorm"}, "Unknown normalization 'batchnorm'"),
    ],
)
def test_bad_values_say_what_is_allowed(changes, message):
    with pytest.raises(ValueError, match=message):
        build(**changes)


def test_every_optional_part_saves_and_reloads(tmp_path):
    model = build(
        squeeze_excitation=True,
        downsample="strided_conv",
        head="flatten",
        dense_layers=2,
        kernel_size=5,
        normalization="group",
        activation="gelu",
    )
    images = np.random.default_rng(0).uniform(0, 1, size=(2, 8, 8, 3)).astype("float32")
    path = tmp_path / "stagewise.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(reloaded(images), model(images))


@pytest.mark.slow
def test_learns_real_handwritten_digits():
    """sklearn's 8x8 digits (real scans, shipped in its wheel): a small configuration gets most
    held-out digits right after a few epochs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[..., None] / 16.0).astype("float32")
    labels = digits.target
    keras.utils.set_random_seed(0)
    model = zoo.create(
        "stagewise_cnn",
        input_shape=(8, 8, 1),
        num_classes=10,
        num_stages=2,
        filters=16,
        dense_units=64,
        dropout_rate=0.2,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(images[:1400], labels[:1400], epochs=8, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(images[1400:], labels[1400:], verbose=0)
    assert accuracy > 0.9

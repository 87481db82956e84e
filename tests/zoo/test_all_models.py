"""What every registered model must do: exact paper parameter counts, a small build, save and
reload, a headless feature vector, a clear error below its minimum input, float32 outputs under
mixed precision."""

import keras
import numpy as np
import pytest

import zoo
from zoo.describe import trainable_param_count

# name -> (total params from count_params(), trainable params), 1000 classes at the default
# input unless the paper's model is a 10-class one. None where the issue does not fix a number.
PAPER_PARAMS = {
    "lenet5": (60_850, 60_850),
    "lenet5_modern": (61_706, 61_706),
    "alexnet": (61_100_840, 61_100_840),
    "alexnet_original": (60_965_224, 60_965_224),
    "vgg11": (132_863_336, 132_863_336),
    "vgg13": (133_047_848, 133_047_848),
    "vgg16": (138_357_544, 138_357_544),
    "vgg19": (143_667_240, 143_667_240),
    "vgg11_bn": (None, 132_868_840),
    "vgg13_bn": (None, 133_053_736),
    "vgg16_bn": (None, 138_365_992),
    "vgg19_bn": (None, 143_678_248),
    "googlenet": (6_998_552, 6_998_552),
    "resnet18": (None, 11_689_512),
    "resnet34": (None, 21_797_672),
    "resnet50": (25_636_712, None),
    "resnet101": (44_707_176, None),
    "resnet152": (60_419_944, None),
    "resnet50_v2": (25_613_800, None),
    "resnet101_v2": (44_675_560, None),
    "resnet152_v2": (60_380_648, None),
    "resnet20": (None, 269_722),
    "resnet32": (None, 464_154),
    "resnet44": (None, 658_586),
    "resnet56": (None, 853_018),
    "resnet110": (None, 1_727_962),
    "mobilenet": (4_253_864, 4_231_976),
    "mobilenet_v2": (3_538_984, 3_504_872),
}

CONFIGURABLE = {"stagewise_cnn"}

# Channels of the last feature map, the length of a headless model's pooled feature vector.
FEATURE_WIDTHS = {
    "lenet5": 120,
    "lenet5_modern": 120,  # C5
    "alexnet": 256,
    "alexnet_original": 256,
    **{name: 512 for name in zoo.list_models("vgg*")},
    "googlenet": 1024,
    "resnet18": 512,
    "resnet34": 512,
    **{f"resnet{depth}{version}": 2048 for depth in (50, 101, 152) for version in ("", "_v2")},
    **{f"resnet{depth}": 64 for depth in (20, 32, 44, 56, 110)},
    "mobilenet": 1024,
    "mobilenet_v2": 1280,
    "stagewise_cnn": 128,  # 32 filters doubled in each of 3 stages: 32, 64, 128
}

# One model per family module: what is shared code (heads, pooling, precision) is checked on
# these, so the suite does not build every 100-layer ResNet again for the same code path.
REPRESENTATIVES = [
    "lenet5",
    "alexnet_original",
    "vgg11_bn",
    "googlenet",
    "resnet20",
    "resnet18",
    "resnet50_v2",
    "mobilenet",
    "mobilenet_v2",
    "stagewise_cnn",
]
# ResNet-101/152 (v1 and v2) are resnet50/resnet50_v2's builder and blocks with longer stage
# lists: their exact counts are checked below; building, saving and reloading them again would
# test no other code, at 10-25 s each.
DEEP_RESNETS = {"resnet101", "resnet152", "resnet101_v2", "resnet152_v2"}
BUILT_SMALL = [name for name in zoo.list_models() if name not in DEEP_RESNETS]


def test_every_paper_model_is_registered():
    assert set(zoo.list_models()) == set(PAPER_PARAMS) | CONFIGURABLE == set(FEATURE_WIDTHS)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_count_matches_the_paper(name):
    total, trainable = PAPER_PARAMS[name]
    model = zoo.create(name)  # default input and class count: the paper's model
    if total is not None:
        assert model.count_params() == total
    if trainable is not None:
        assert trainable_param_count(model) == trainable
    del model


def small_input_shape(name):
    size = zoo.model_info(name).min_input_size
    return (size, size, 2)  # any channel count works, not just the paper's


@pytest.mark.parametrize("name", BUILT_SMALL)
def test_small_build_saves_and_reloads_with_identical_outputs(name, tmp_path):
    shape = small_input_shape(name)
    model = zoo.create(name, input_shape=shape, num_classes=7)
    images = np.random.default_rng(0).uniform(0, 1, size=(2, *shape)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    assert expected.shape == (2, 7)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(images, training=False)), expected
    )
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize(
    "name, pooling",
    [(name, "avg") for name in BUILT_SMALL] + [(name, "max") for name in REPRESENTATIVES],
)
def test_headless_model_with_pooling_gives_a_feature_vector(name, pooling):
    shape = small_input_shape(name)
    model = zoo.create(name, input_shape=shape, include_top=False, pooling=pooling)
    assert model.output.shape == (None, FEATURE_WIDTHS[name])
    assert model.layers[-1].name == f"{pooling}_pool"


@pytest.mark.parametrize("name", zoo.list_models())
def test_input_below_minimum_names_the_minimum(name):
    size = zoo.model_info(name).min_input_size
    with pytest.raises(ValueError, match=f"at least {size}x{size}"):
        zoo.create(name, input_shape=(size - 1, size - 1, 3))


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_mixed_precision_keeps_the_classifier_output_float32(name):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = zoo.create(name, input_shape=small_input_shape(name), num_classes=5)
    assert model.output.dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_sigmoid_head_is_the_sigmoid_of_the_logits_head(name):
    shape = small_input_shape(name)
    logits = zoo.create(name, input_shape=shape, num_classes=1, classifier_activation=None)
    binary = zoo.create(name, input_shape=shape, num_classes=1, classifier_activation="sigmoid")
    binary.set_weights(logits.get_weights())  # the same network; only the last activation differs
    images = np.random.default_rng(0).uniform(0, 1, size=(2, *shape)).astype("float32")
    logit = keras.ops.convert_to_numpy(logits(images, training=False))
    probability = keras.ops.convert_to_numpy(binary(images, training=False))
    assert logits.output.shape == binary.output.shape == (None, 1)
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-logit)), rtol=1e-5, atol=1e-7)

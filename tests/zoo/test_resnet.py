"""ResNet family: residual blocks, knobs, FLOPs against the papers, keras.applications weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.blocks import ParameterFreeShortcut, basic_block, bottleneck_block
from zoo.describe import trainable_param_count
from zoo.families.resnet import build_resnet
from zoo.options import LayerOptions
from zoo.weights import copy_weights

OPTIONS = LayerOptions()


def block_model(block, input_shape, filters, **kwargs):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, block(inputs, filters, options=OPTIONS, name="b", **kwargs))


def layer_types(model):
    return {type(layer).__name__ for layer in model.layers}


# --- blocks -----------------------------------------------------------------------------------


def test_parameter_free_shortcut_subsamples_and_appends_zero_channels():
    x = np.arange(2 * 5 * 5 * 3, dtype="float32").reshape(2, 5, 5, 3)
    y = keras.ops.convert_to_numpy(ParameterFreeShortcut(7, strides=2)(x))
    assert y.shape == (2, 3, 3, 7)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 3:], 0.0)
    # Its gradient reaches the subsampled pixels unchanged and no other.
    weights = tf.random.uniform(y.shape)
    with tf.GradientTape() as tape:
        x = tf.constant(x)
        tape.watch(x)
        loss = tf.reduce_sum(ParameterFreeShortcut(7, strides=2)(x) * weights)
    expected = np.zeros(x.shape, "float32")
    expected[:, ::2, ::2, :] = weights[..., :3]
    np.testing.assert_array_equal(tape.gradient(loss, x), expected)


def test_parameter_free_shortcut_cannot_drop_channels():
    with pytest.raises(ValueError, match="received 8 channels for a block of 4"):
        ParameterFreeShortcut(4, name="s")(keras.Input((4, 4, 8)))


def test_basic_block_with_projection_counts_the_paper_weights():
    model = block_model(basic_block, (8, 8, 16), 32, strides=2)
    # Two 3x3 convolutions and a 1x1 projection, no biases, each followed by a BatchNorm.
    convs = 3 * 3 * 16 * 32 + 3 * 3 * 32 * 32 + 16 * 32
    assert trainable_param_count(model) == convs + 3 * 2 * 32
    assert model.output.shape == (None, 4, 4, 32)
    assert model.get_layer("b_0_conv").strides == (2, 2)


@pytest.mark.parametrize("normalization", ["batch", "none"])
def test_untrained_zero_pad_block_is_its_shortcut(normalization):
    options = LayerOptions(normalization=normalization)
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(
        inputs, basic_block(inputs, 8, strides=2, shortcut="zero_pad", options=options, name="b")
    )
    assert "ParameterFreeShortcut" in layer_types(model)
    norms = 2 * 2 * 8 if normalization == "batch" else 2 * 8  # scales and shifts, or biases
    assert trainable_param_count(model) == 3 * 3 * 4 * 8 + 3 * 3 * 8 * 8 + norms
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 4)).astype("float32")
    shortcut = np.concatenate([x[:, ::2, ::2, :], np.zeros((1, 3, 3, 4))], axis=-1)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.maximum(shortcut, 0), atol=1e-6)


@pytest.mark.parametrize("zero_init_residual", [True, False])
def test_zero_init_residual_makes_an_untrained_preactivation_block_the_identity(zero_init_residual):
    model = block_model(
        bottleneck_block, (4, 4, 16), 4, preact=True, zero_init_residual=zero_init_residual
    )
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 16)).astype("float32")
    change = np.abs(model.predict(x, verbose=0) - x).max()
    assert (change == 0.0) if zero_init_residual else (change > 1e-2)


def test_identity_block_adds_its_input_unchanged():
    model = block_model(basic_block, (4, 4, 8), 8)
    add = model.get_layer("b_add")
    assert add.input[0] is model.input  # no layer on the shortcut
    assert "ParameterFreeShortcut" not in layer_types(model)


def test_post_activation_bottleneck_strides_in_the_first_1x1():
    model = block_model(bottleneck_block, (8, 8, 64), 16, strides=2)
    assert model.output.shape == (None, 4, 4, 64)
    assert model.get_layer("b_1_conv").strides == (2, 2)
    assert model.get_layer("b_2_conv").strides == (1, 1)
    assert model.get_layer("b_out").activation is keras.activations.relu


def test_pre_activation_bottleneck_strides_in_the_3x3_and_projects_the_preactivation():
    model = block_model(bottleneck_block, (8, 8, 32), 16, strides=2, preact=True)
    assert model.get_layer("b_1_conv").strides == (1, 1)
    assert model.get_layer("b_2_conv").strides == (2, 2)
    assert model.get_layer("b_2_pad").padding == ((1, 1), (1, 1))
    projection = model.get_layer("b_0_conv")
    assert projection.input is model.get_layer("b_preact_act").output
    # Biases only where no normalization follows: the projection and the last 1x1.
    assert projection.use_bias and model.get_layer("b_3_conv").use_bias
    assert not model.get_layer("b_1_conv").use_bias
    assert isinstance(model.get_layer("b_out"), keras.layers.Add)  # nothing after the sum


def test_pre_activation_stride_without_new_channels_subsamples_the_identity():
    model = block_model(basic_block, (8, 8, 16), 16, strides=2, preact=True)
    assert model.output.shape == (None, 4, 4, 16)
    shortcut = model.get_layer("b_0_shortcut")
    assert isinstance(shortcut, ParameterFreeShortcut) and shortcut.input is model.input


def test_unknown_shortcut_is_rejected():
    with pytest.raises(ValueError, match="shortcut must be one of.*got 'C'"):
        block_model(basic_block, (4, 4, 8), 16, shortcut="C")


# --- models and knobs -------------------------------------------------------------------------


def test_cifar_depth_knob_gives_the_named_model():
    assert trainable_param_count(zoo.create("resnet20", depth=32)) == 464_154
    assert len(zoo.create("resnet20", depth=14).get_layer("conv4_block2_add").output.shape) == 4
    with pytest.raises(ValueError, match=r"6n \+ 2.*got 21"):
        zoo.create("resnet20", depth=21)


def test_imagenet_depth_knob_rejects_depths_outside_the_table():
    with pytest.raises(ValueError, match=r"one of \[18, 34, 50, 101, 152\], got 26"):
        zoo.create("resnet18", depth=26)


def test_width_multiplies_the_stage_filters_but_not_the_classifier():
    model = zoo.create("resnet20", width=2)
    assert model.get_layer("conv1_conv").filters == 32
    assert model.get_layer("conv4_block3_2_conv").filters == 128
    assert model.output.shape == (None, 10)
    with pytest.raises(ValueError, match="width must be a positive multiplier.*got 0"):
        zoo.create("resnet20", width=0)


def test_preact_cifar_resnet_is_the_v2_layout():
    model = zoo.create("resnet20", preact=True)
    names = [layer.name for layer in model.layers]
    assert "conv2_block1_preact_norm" in names and "conv1_norm" not in names
    assert names[-5:-2] == ["post_norm", "post_act", "avg_pool"]


def test_projection_shortcuts_on_cifar_add_the_two_1x1_convolutions():
    plain = trainable_param_count(zoo.create("resnet20"))
    projected = zoo.create("resnet20", shortcut="projection")
    assert trainable_param_count(projected) - plain == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert "ParameterFreeShortcut" not in layer_types(projected)


@pytest.mark.parametrize("name, extra", [("resnet18", 4_800), ("resnet34", 8_512)])
def test_conv_biases_on_torchvision_resnets(name, extra):
    plain = trainable_param_count(zoo.create(name))
    assert trainable_param_count(zoo.create(name, use_bias=True)) - plain == extra


def test_dropout_activation_and_normalization_knobs():
    model = zoo.create("resnet20", dropout_rate=0.3, activation="gelu", normalization="group")
    assert model.get_layer("head_dropout").rate == 0.3
    assert model.get_layer("conv2_block1_out").activation is keras.activations.gelu
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.get_layer("conv4_block1_1_norm").groups == 32
    plain = zoo.create("resnet20", normalization="none")
    assert plain.get_layer("conv2_block1_1_conv").use_bias  # no norm: convolutions keep biases
    with pytest.raises(ValueError, match="Unknown activation 'mish'"):
        zoo.create("resnet20", activation="mish")


def test_v2_strides_at_the_end_of_each_stage_and_ends_with_norm_and_activation():
    model = zoo.create("resnet50_v2", input_shape=(64, 64, 3))
    assert model.get_layer("conv3_block4_2_conv").strides == (2, 2)
    assert model.get_layer("conv3_block1_2_conv").strides == (1, 1)
    assert model.get_layer("conv5_block3_2_conv").strides == (1, 1)
    assert [layer.name for layer in model.layers[-5:-3]] == ["post_norm", "post_act"]


def test_generic_builder_checks_the_stage_lists():
    with pytest.raises(ValueError, match="one entry per stage; got 2, 3 and 3"):
        build_resnet(
            (32, 32, 3),
            stackwise_num_filters=[8, 16],
            stackwise_num_blocks=[1, 1, 1],
            stackwise_num_strides=[1, 2, 2],
            block_type="basic",
        )
    with pytest.raises(ValueError, match="block_type must be one of .*got 'dense'"):
        build_resnet(
            (32, 32, 3),
            stackwise_num_filters=[8],
            stackwise_num_blocks=[1],
            stackwise_num_strides=[1],
            block_type="dense",
        )


def test_generic_builder_makes_a_small_preactivation_network():
    model = build_resnet(
        (16, 16, 1),
        stackwise_num_filters=[4, 8],
        stackwise_num_blocks=[1, 2],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck",
        preact=True,
        shortcut="zero_pad",
        stem="cifar",
        stem_filters=4,
        num_classes=3,
    )
    assert model.get_layer("conv3_block1_out").output.shape == (None, 8, 8, 32)
    assert model.output.shape == (None, 3)


@pytest.mark.parametrize(
    "name, paper_multiply_adds",
    [
        ("resnet20", 41e6),  # He et al. 2015, section 4.2
        ("resnet18", 1.8e9),  # table 1
        ("resnet50", 3.8e9),  # table 1: the stride sits in the first 1x1, as in keras.applications
    ],
)
def test_flops_match_the_paper(name, paper_multiply_adds):
    flops = zoo.describe(name)["flops"]
    assert flops == pytest.approx(2 * paper_multiply_adds, rel=0.03)


# --- keras.applications weights ---------------------------------------------------------------


def randomize_batchnorm(model, seed=0):
    """Give every BatchNorm its own statistics, so a misordered copy changes the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights(
                [
                    rng.uniform(0.8, 1.2, shape),
                    rng.normal(0, 0.1, shape),
                    rng.normal(0, 0.1, shape),
                    rng.uniform(0.8, 1.2, shape),
                ]
            )


def test_resnet152s_name_their_keras_application():
    assert zoo.model_info("resnet152").keras_application is keras.applications.ResNet152
    assert zoo.model_info("resnet152_v2").keras_application is keras.applications.ResNet152V2


@pytest.mark.parametrize(
    "name, application",
    [
        ("resnet50", keras.applications.ResNet50),
        ("resnet50_v2", keras.applications.ResNet50V2),
        # One deeper stage list per version; ResNet-152's only differ in the numbers, which
        # the parameter counts pin exactly.
        pytest.param("resnet101", keras.applications.ResNet101, marks=pytest.mark.slow),
        pytest.param("resnet101_v2", keras.applications.ResNet101V2, marks=pytest.mark.slow),
    ],
)
def test_keras_applications_weights_give_the_same_outputs(name, application):
    assert zoo.model_info(name).keras_application is application
    shape = (64, 64, 3)
    reference = application(weights=None, input_shape=shape, classes=4, classifier_activation=None)
    randomize_batchnorm(reference)
    model = zoo.create(name, input_shape=shape, num_classes=4, classifier_activation=None)
    copy_weights(reference, model)
    images = np.random.default_rng(1).uniform(-1, 1, size=(2, *shape)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(images, training=False))
    assert np.abs(expected).max() > 1e-2  # logits, not a saturated softmax
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(images, training=False)), expected, rtol=1e-5, atol=1e-5
    )

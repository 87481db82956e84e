"""MobileNet (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018).

Both are weight-compatible with keras.applications.MobileNet / MobileNetV2: the layers that hold
weights are made in the same order with the same shapes, so `zoo.weights.copy_weights` (and
`weights="imagenet"`) pair them up. The outputs match keras.applications' too, except for
MobileNet v1 on inputs whose strided layers see an odd size (sizes not divisible by 32; every
pretrained size is): keras pads those asymmetrically, TensorFlow's "same" padding does not.
Like keras.applications, the models expect inputs scaled to [-1, 1] with ImageNet weights.
"""

import keras

from zoo import blocks
from zoo.common import (
    check_dropout,
    check_head_arguments,
    global_pool_classifier,
    layer_options,
    model_input,
)
from zoo.options import DEFAULT_LEAKY_SLOPE
from zoo.registry import register_model

PAPER_V1 = (
    "Howard et al. 2017, MobileNets: Efficient Convolutional Neural Networks for Mobile "
    "Vision Applications, arXiv:1704.04861"
)
PAPER_V2 = (
    "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks, arXiv:1801.04381"
)
ARGUMENT_DOCS = {
    "alpha": "width multiplier: scales every layer's channels (MobileNetV2 rounds them to "
    "multiples of 8).",
    "depth_multiplier": "depthwise outputs per input channel (the paper's resolution multiplier "
    "is the input size).",
}

# MobileNet v1 body (table 1 of the paper): (pointwise filters, depthwise stride) per block.
MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)

# MobileNetV2 body (table 2 of the paper): (expansion t, output channels c, repeats n, stride s);
# the stride applies to the first block of each row.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value, divisor=8):
    """Round a channel count to a multiple of `divisor`, never below 90% of `value` (the rounding
    of the MobileNetV2 reference implementation and keras.applications)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _check_alpha(name, alpha, *, minimum=0.0):
    """`alpha` must be positive, and at least `minimum` where a smaller one leaves a layer with
    no channels."""
    if (
        not isinstance(alpha, (int, float))
        or isinstance(alpha, bool)
        or not (alpha > 0 and alpha >= minimum)
    ):
        allowed = f"a number >= {minimum:g}" if minimum else "a positive number"
        raise ValueError(f"{name}: alpha (the width multiplier) must be {allowed}, got {alpha!r}.")


def _mobilenet_v1(
    input_shape,
    *,
    num_classes=1000,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation="relu6",
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer="he_normal",
    normalization="batch",
    dropout_rate=1e-3,
    weight_decay=0.0,
    alpha=1.0,
    depth_multiplier=1,
    name="mobilenet",
):
    check_head_arguments(
        name,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
    )
    check_dropout(name, dropout_rate)
    _check_alpha(name, alpha, minimum=1 / 32)
    if type(depth_multiplier) is not int or depth_multiplier < 1:
        raise ValueError(
            f"{name}: depth_multiplier must be a positive integer, got {depth_multiplier!r}."
        )
    options = layer_options(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
    )
    inputs = model_input(input_shape)
    x = blocks.conv_norm_act(inputs, int(32 * alpha), 3, strides=2, options=options, name="stem")
    for index, (filters, strides) in enumerate(MOBILENET_V1_BLOCKS, start=1):
        x = blocks.depthwise_separable_block(
            x,
            int(filters * alpha),
            strides=strides,
            depth_multiplier=depth_multiplier,
            options=options,
            name=f"block{index}",
        )
    outputs = global_pool_classifier(
        x,
        include_top=include_top,
        pooling=pooling,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
        options=options,
    )
    return keras.Model(inputs, outputs, name=name)


def _mobilenet_v2(
    input_shape,
    *,
    num_classes=1000,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation="relu6",
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer="he_normal",
    normalization="batch",
    dropout_rate=0.2,
    weight_decay=0.0,
    alpha=1.0,
    name="mobilenet_v2",
):
    check_head_arguments(
        name,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
    )
    check_dropout(name, dropout_rate)
    _check_alpha(name, alpha)
    # Batch norm momentum 0.999 as in the reference implementation.
    options = layer_options(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
        bn_momentum=0.999,
        bn_epsilon=1e-3,
    )
    inputs = model_input(input_shape)
    x = blocks.conv_norm_act(
        inputs, make_divisible(32 * alpha), 3, strides=2, options=options, name="stem"
    )
    index = 0
    for expansion, channels, repeats, first_stride in MOBILENET_V2_STAGES:
        for repeat in range(repeats):
            x = blocks.inverted_residual_block(
                x,
                make_divisible(int(channels * alpha)),
                expansion=expansion,
                strides=first_stride if repeat == 0 else 1,
                options=options,
                name=f"block{index}",
            )
            index += 1
    # The paper keeps the last layer at 1280 channels for alpha <= 1 (it sets the feature size).
    top_channels = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = blocks.conv_norm_act(x, top_channels, 1, options=options, name="top")
    outputs = global_pool_classifier(
        x,
        include_top=include_top,
        pooling=pooling,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
        options=options,
    )
    return keras.Model(inputs, outputs, name=name)


mobilenet = register_model(
    "mobilenet",
    _mobilenet_v1,
    paper=PAPER_V1,
    keras_application=keras.applications.MobileNet,
    summary="MobileNet v1, layer for layer keras.applications.MobileNet (dropout 1e-3 as there).",
    default_input_shape=(224, 224, 3),
    min_input_size=32,
    argument_docs=ARGUMENT_DOCS,
)
mobilenet_v2 = register_model(
    "mobilenet_v2",
    _mobilenet_v2,
    paper=PAPER_V2,
    keras_application=keras.applications.MobileNetV2,
    summary="MobileNetV2, layer for layer keras.applications.MobileNetV2 (dropout 0.2 before the "
    "classifier, as in its training).",
    default_input_shape=(224, 224, 3),
    min_input_size=32,
    argument_docs=ARGUMENT_DOCS,
)

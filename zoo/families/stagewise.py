"""A configurable CNN built by the design rules taught for small datasets.

Stages of `convs_per_stage` conv -> norm -> act layers, each stage followed by a downsample that
halves the feature map, the filter count starting at `filters` and doubling per stage; then
global pooling or flatten, and dense layers with dropout before each. Every choice is a plain
keyword argument with a closed set of values, so a KerasTuner search space maps onto it directly.
"""

import keras

from zoo import blocks
from zoo.common import (
    check_dropout,
    check_head_arguments,
    classifier,
    layer_options,
    model_input,
    pool_features,
)
from zoo.options import DEFAULT_LEAKY_SLOPE
from zoo.registry import register_model

NUM_STAGES = (1, 2, 3, 4, 5, 6)
CONVS_PER_STAGE = (1, 2, 3, 4)
KERNEL_SIZES = (3, 5)
DENSE_LAYERS = (0, 1, 2)  # hidden layers; with the classifier that is 1-3 dense layers
DOWNSAMPLES = ("max_pool", "avg_pool", "strided_conv")
HEADS = ("global_avg", "global_max", "flatten")
ARGUMENT_DOCS = {
    "dropout_rate": "dropout before every dense layer (hidden and classifier), in [0, 1).",
    "num_stages": f"stages, each halving the image: one of {NUM_STAGES}.",
    "convs_per_stage": f"conv-norm-activation layers per stage: one of {CONVS_PER_STAGE}.",
    "filters": "filters of the first stage; stage i (from 0) has filters * 2**i.",
    "kernel_size": f"convolution kernel size: one of {KERNEL_SIZES}.",
    "downsample": f"how a stage halves the image: one of {DOWNSAMPLES}.",
    "squeeze_excitation": "recalibrate each stage's output channels (Hu et al. 2018).",
    "head": f"how the last feature map becomes a vector: one of {HEADS}.",
    "dense_layers": f"hidden dense layers before the classifier: one of {DENSE_LAYERS}.",
    "dense_units": "width of each hidden dense layer.",
}


def _check_choice(name, argument, value, allowed):
    # Compare types too: True == 1 and 3.0 == 3, but neither is a valid choice here.
    if not any(value == choice and type(value) is type(choice) for choice in allowed):
        raise ValueError(
            f"{name}: {argument} must be one of {', '.join(map(repr, allowed))}; got {value!r}."
        )


def _check_positive_int(name, argument, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: {argument} must be a positive integer, got {value!r}.")


def min_input_size(num_stages):
    """Every stage halves the feature map, so the input needs 2**num_stages pixels a side."""
    return 2**num_stages


def _downsample(x, method, *, kernel_size, options, name):
    if method == "max_pool":
        return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    if method == "avg_pool":
        return keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)
    return blocks.conv_norm_act(
        x, x.shape[-1], kernel_size, strides=2, options=options, name=f"{name}_down"
    )


def _head(
    x, *, head, dense_layers, dense_units, dropout_rate, num_classes, classifier_activation, options
):
    if head == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = pool_features(x, head.removeprefix("global_"))
    for index in range(1, dense_layers + 1):
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"dense{index}_dropout")(x)
        x = options.dense(dense_units, name=f"dense{index}")(x)
        x = options.act(name=f"dense{index}_act")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
    return classifier(
        x, num_classes=num_classes, classifier_activation=classifier_activation, options=options
    )


def _stagewise_cnn(
    input_shape,
    *,
    num_classes=10,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation="relu",
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer="he_normal",
    normalization="batch",
    dropout_rate=0.5,
    weight_decay=0.0,
    num_stages=3,
    convs_per_stage=2,
    filters=32,
    kernel_size=3,
    downsample="max_pool",
    squeeze_excitation=False,
    head="global_avg",
    dense_layers=1,
    dense_units=128,
    name="stagewise_cnn",
):
    """A small-data CNN. Stage `i` (from 0) has `filters * 2**i` filters; `dropout_rate` drops
    the input of every dense layer; `squeeze_excitation` recalibrates each stage's output."""
    check_head_arguments(
        name,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
    )
    check_dropout(name, dropout_rate)
    _check_choice(name, "num_stages", num_stages, NUM_STAGES)
    _check_choice(name, "convs_per_stage", convs_per_stage, CONVS_PER_STAGE)
    _check_choice(name, "kernel_size", kernel_size, KERNEL_SIZES)
    _check_choice(name, "downsample", downsample, DOWNSAMPLES)
    _check_choice(name, "squeeze_excitation", squeeze_excitation, (False, True))
    _check_choice(name, "head", head, HEADS)
    _check_choice(name, "dense_layers", dense_layers, DENSE_LAYERS)
    _check_positive_int(name, "filters", filters)
    _check_positive_int(name, "dense_units", dense_units)
    smallest = min_input_size(num_stages)
    if min(input_shape[:2]) < smallest:
        raise ValueError(
            f"{name}: input_shape {input_shape} is too small for num_stages={num_stages}: each "
            f"stage halves the image, so it needs at least {smallest}x{smallest} pixels."
        )
    options = layer_options(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
    )

    inputs = model_input(input_shape)
    x = inputs
    for stage in range(1, num_stages + 1):
        stage_filters = filters * 2 ** (stage - 1)
        for conv in range(1, convs_per_stage + 1):
            x = blocks.conv_norm_act(
                x, stage_filters, kernel_size, options=options, name=f"stage{stage}_conv{conv}"
            )
        if squeeze_excitation:
            x = blocks.squeeze_excitation(x, options=options, name=f"stage{stage}_se")
        x = _downsample(
            x, downsample, kernel_size=kernel_size, options=options, name=f"stage{stage}"
        )
    if include_top:
        outputs = _head(
            x,
            head=head,
            dense_layers=dense_layers,
            dense_units=dense_units,
            dropout_rate=dropout_rate,
            num_classes=num_classes,
            classifier_activation=classifier_activation,
            options=options,
        )
    else:
        outputs = pool_features(x, pooling)
    return keras.Model(inputs, outputs, name=name)


stagewise_cnn = register_model(
    "stagewise_cnn",
    _stagewise_cnn,
    summary="A small-data CNN: stages of conv-norm-activation layers, each halving the image "
    "and doubling the filters, then a pooled or flattened head with dropout.",
    paper="Design rules for small-data CNNs: stacked 3x3 convs (Simonyan & Zisserman 2015), "
    "batch norm (Ioffe & Szegedy 2015), dropout (Srivastava et al. 2014), optional "
    "squeeze-excitation (Hu et al. 2018)",
    default_input_shape=(32, 32, 3),
    min_input_size=min_input_size(3),
    argument_docs=ARGUMENT_DOCS,
)

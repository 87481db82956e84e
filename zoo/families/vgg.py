"""VGG (Simonyan and Zisserman, "Very deep convolutional networks for large-scale image
recognition", ICLR 2015; arXiv 2014), configurations A, B, D and E, with and without
BatchNorm.

Every convolution is 3x3 "same"; each stage ends in a 2x2 max-pool; the head is Flatten then
FC 4096 - FC 4096 - classifier as in keras.applications (so VGG16/VGG19 take its weights), with
the paper's dropout 0.5 after each hidden FC layer. The `_bn` variants put BatchNorm after each
convolution and keep the convolution's bias, as torchvision does.
"""

import keras

from zoo import common
from zoo.blocks import conv_norm_act
from zoo.options import DEFAULT_LEAKY_SLOPE
from zoo.registry import register_model

PAPER = (
    "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition"
)
STAGE_WIDTHS = (64, 128, 256, 512, 512)
# Convolutions per stage, by depth (weight layers = convolutions + 3 FC): configs A, B, D, E.
STAGE_DEPTHS = {
    11: [1, 1, 2, 2, 2],
    13: [2, 2, 2, 2, 2],
    16: [2, 2, 3, 3, 3],
    19: [2, 2, 4, 4, 4],
}
CONFIGURATIONS = {11: "A", 13: "B", 16: "D", 19: "E"}  # the paper's names for the depths
ARGUMENT_DOCS = {
    "dropout_rate": "dropout after each hidden FC layer, in [0, 1); 0 removes the Dropout layers.",
    "fc_units": "width of the two hidden FC layers.",
}


def _vgg(
    input_shape,
    *,
    depth,
    num_classes=1000,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation="relu",
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer="glorot_uniform",
    normalization="none",
    dropout_rate=0.5,
    weight_decay=0.0,
    fc_units=4096,
    name="vgg",
):
    """The one VGG builder: `depth` is 11, 13, 16 or 19 (configurations A, B, D, E); the other
    arguments are documented on `vgg16` (ARGUMENT_DOCS)."""
    common.check_head_arguments(
        name,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
    )
    common.check_dropout(name, dropout_rate)
    if not isinstance(fc_units, int) or isinstance(fc_units, bool) or fc_units < 1:
        raise ValueError(f"{name}: fc_units must be a positive integer, got {fc_units!r}.")
    options = common.layer_options(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
    )

    inputs = common.model_input(input_shape)
    x = inputs
    for stage, (width, convs) in enumerate(zip(STAGE_WIDTHS, STAGE_DEPTHS[depth]), start=1):
        for index in range(1, convs + 1):
            x = conv_norm_act(
                x, width, 3, use_bias=True, options=options, name=f"block{stage}_conv{index}"
            )
        x = keras.layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
    if not include_top:
        return keras.Model(inputs, common.pool_features(x, pooling), name=name)

    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = options.dense(fc_units, name=f"fc{index}_dense")(x)
        x = options.act(name=f"fc{index}_act")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"fc{index}_dropout")(x)
    x = common.classifier(
        x, num_classes=num_classes, classifier_activation=classifier_activation, options=options
    )
    return keras.Model(inputs, x, name=name)


def _register(name, depth, *, batch_norm=False, **registration):
    summary = f"VGG-{depth} (configuration {CONFIGURATIONS[depth]})"
    if batch_norm:
        summary += " with BatchNorm after every convolution (conv biases kept, as torchvision)"
    return register_model(
        name,
        _vgg,
        fixed={"depth": depth},
        defaults={"normalization": "batch"} if batch_norm else {},
        summary=summary + ".",
        paper=PAPER,
        default_input_shape=(224, 224, 3),
        min_input_size=32,
        argument_docs=ARGUMENT_DOCS,
        **registration,
    )


vgg11 = _register("vgg11", 11)
vgg13 = _register("vgg13", 13)
vgg16 = _register("vgg16", 16, keras_application=keras.applications.VGG16)
vgg19 = _register("vgg19", 19, keras_application=keras.applications.VGG19)
vgg11_bn = _register("vgg11_bn", 11, batch_norm=True)
vgg13_bn = _register("vgg13_bn", 13, batch_norm=True)
vgg16_bn = _register("vgg16_bn", 16, batch_norm=True)
vgg19_bn = _register("vgg19_bn", 19, batch_norm=True)

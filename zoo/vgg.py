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
from zoo.registry import register_model

PAPER = (
    "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image "
    "recognition"
)
STAGE_WIDTHS = (64, 128, 256, 512, 512)
# Convolutions per stage, by depth (weight layers = convolutions + 3 FC): configs A, B, D, E.
STAGE_DEPTHS = {
    11: [1, 1, 2, 2, 2],
    13: [2, 2, 2, 2, 2],
    16: [2, 2, 3, 3, 3],
    19: [2, 2, 4, 4, 4],
}


def _vgg(input_shape, depth, *, num_classes=1000, include_top=True, pooling=None,
         classifier_activation="softmax", name, activation="relu",
         kernel_initializer="glorot_uniform", normalization="none", weight_decay=0.0,
         dropout_rate=0.5, fc_units=4096):
    """The one VGG builder. Family knobs: `fc_units` (width of the two hidden FC layers) and
    `dropout_rate` (after each of them; 0 removes the Dropout layers)."""
    common.check_head_arguments(name, num_classes=num_classes, include_top=include_top,
                                pooling=pooling, classifier_activation=classifier_activation)
    common.check_dropout(name, dropout_rate)
    if not isinstance(fc_units, int) or isinstance(fc_units, bool) or fc_units < 1:
        raise ValueError(f"{name}: fc_units must be a positive integer, got {fc_units!r}.")
    options = common.layer_options(activation=activation, kernel_initializer=kernel_initializer,
                                   normalization=normalization, weight_decay=weight_decay)

    inputs = common.model_input(input_shape)
    x = inputs
    for stage, (width, convs) in enumerate(zip(STAGE_WIDTHS, STAGE_DEPTHS[depth]), start=1):
        for index in range(1, convs + 1):
            x = conv_norm_act(x, width, 3, use_bias=True, options=options,
                              name=f"block{stage}_conv{index}")
        x = keras.layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
    if not include_top:
        return keras.Model(inputs, common.pool_features(x, pooling), name=name)

    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = options.dense(fc_units, name=f"fc{index}_dense")(x)
        x = options.act(name=f"fc{index}_act")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"fc{index}_dropout")(x)
    x = common.classifier(x, num_classes=num_classes, classifier_activation=classifier_activation,
                          options=options)
    return keras.Model(inputs, x, name=name)


def _register(**kwargs):
    return register_model(default_input_shape=(224, 224, 3), min_input_size=32, paper=PAPER,
                          **kwargs)


@_register()
def vgg11(input_shape, **kwargs):
    return _vgg(input_shape, 11, **{"name": "vgg11", **kwargs})


@_register()
def vgg13(input_shape, **kwargs):
    return _vgg(input_shape, 13, **{"name": "vgg13", **kwargs})


@_register(keras_application=keras.applications.VGG16)
def vgg16(input_shape, **kwargs):
    return _vgg(input_shape, 16, **{"name": "vgg16", **kwargs})


@_register(keras_application=keras.applications.VGG19)
def vgg19(input_shape, **kwargs):
    return _vgg(input_shape, 19, **{"name": "vgg19", **kwargs})


@_register()
def vgg11_bn(input_shape, **kwargs):
    return _vgg(input_shape, 11, **{"name": "vgg11_bn", "normalization": "batch", **kwargs})


@_register()
def vgg13_bn(input_shape, **kwargs):
    return _vgg(input_shape, 13, **{"name": "vgg13_bn", "normalization": "batch", **kwargs})


@_register()
def vgg16_bn(input_shape, **kwargs):
    return _vgg(input_shape, 16, **{"name": "vgg16_bn", "normalization": "batch", **kwargs})


@_register()
def vgg19_bn(input_shape, **kwargs):
    return _vgg(input_shape, 19, **{"name": "vgg19_bn", "normalization": "batch", **kwargs})

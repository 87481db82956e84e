"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 1998), as in the paper and in its common modern form.

Layout: C1 conv 5x5x6 - S2 subsample - C3 conv 5x5x16 - S4 subsample - C5 conv 5x5x120 -
F6 dense 84 - output dense. The paper's output layer is a set of Euclidean RBF units with fixed
bitmap codes; here it is the zoo's trainable dense classifier (84*10 + 10 weights all the same).
"""

import keras

from zoo import common
from zoo.blocks import conv_norm_act
from zoo.layers import LECUN_C3_CONNECTIONS, PartialConnectionConv2D, TrainableSubsampling
from zoo.options import DEFAULT_LEAKY_SLOPE
from zoo.registry import register_model

PAPER = "LeCun et al. 1998, Gradient-based learning applied to document recognition"
C3_CONNECTIONS = ("lecun", "full")
SUBSAMPLINGS = ("trainable", "max", "average")
ARGUMENT_DOCS = {
    "dropout_rate": "dropout before the output layer, in [0, 1); 0 removes the Dropout layer.",
    "c3_connections": "'lecun': each C3 map reads the S2 maps of the paper's Table I; 'full': "
    "every C3 map reads all six.",
    "subsampling": "S2 and S4: 'trainable' (the paper's window mean times a trainable "
    "coefficient plus a bias per map, then the activation), 'max' or 'average'.",
    "fc_units": "width of F6.",
}


def _subsample(x, kind, *, options, name):
    if kind == "trainable":
        x = TrainableSubsampling(2, name=f"{name}_subsample")(x)
        return options.act(name=f"{name}_act")(x)
    if kind == "max":
        return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)


def _c3(x, connections, *, options, name):
    if connections == "full":
        return conv_norm_act(x, 16, 5, padding="valid", options=options, name=name)
    x = PartialConnectionConv2D(
        LECUN_C3_CONNECTIONS,
        5,
        use_bias=not options.normalized,
        kernel_initializer=options.kernel_initializer,
        kernel_regularizer=options.regularizer(),
        name=f"{name}_conv",
    )(x)
    x = options.apply_norm(x, name=f"{name}_norm")
    return options.act(name=f"{name}_act")(x)


def _lenet(
    input_shape,
    *,
    num_classes=10,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation,
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer,
    normalization="none",
    dropout_rate=0.0,
    weight_decay=0.0,
    c3_connections,
    subsampling,
    fc_units=84,
    name,
):
    """The one LeNet builder; its arguments are documented on `lenet5` (ARGUMENT_DOCS)."""
    common.check_head_arguments(
        name,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
    )
    common.check_dropout(name, dropout_rate)
    if c3_connections not in C3_CONNECTIONS:
        raise ValueError(
            f"{name}: c3_connections must be 'lecun' or 'full', got {c3_connections!r}."
        )
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(
            f"{name}: subsampling must be 'trainable', 'max' or 'average', got {subsampling!r}."
        )
    options = common.layer_options(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
    )

    inputs = common.model_input(input_shape)
    x = conv_norm_act(inputs, 6, 5, padding="valid", options=options, name="c1")
    x = _subsample(x, subsampling, options=options, name="s2")
    x = _c3(x, c3_connections, options=options, name="c3")
    x = _subsample(x, subsampling, options=options, name="s4")
    # C5 is a convolution (1x1 output at 32x32); the paper makes it one so larger inputs work.
    x = conv_norm_act(x, 120, 5, padding="valid", options=options, name="c5")
    if include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        x = options.dense(fc_units, name="f6_dense")(x)
        x = options.act(name="f6_act")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name="f6_dropout")(x)
        x = common.classifier(
            x, num_classes=num_classes, classifier_activation=classifier_activation, options=options
        )
    else:
        x = common.pool_features(x, pooling)
    return keras.Model(inputs, x, name=name)


def _register(name, summary, **defaults):
    return register_model(
        name,
        _lenet,
        summary=summary,
        paper=PAPER,
        default_input_shape=(32, 32, 1),
        min_input_size=32,
        defaults=defaults,
        argument_docs=ARGUMENT_DOCS,
    )


lenet5 = _register(
    "lenet5",
    "The paper's LeNet-5: partial C3 (Table I), trainable subsampling, scaled tanh.",
    activation="lecun_tanh",
    kernel_initializer="lecun_uniform",
    c3_connections="lecun",
    subsampling="trainable",
)
lenet5_modern = _register(
    "lenet5_modern",
    "LeNet-5 as usually taught today: fully connected C3, max-pooling, ReLU.",
    activation="relu",
    kernel_initializer="he_normal",
    c3_connections="full",
    subsampling="max",
)

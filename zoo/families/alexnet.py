"""AlexNet (Krizhevsky, Sutskever and Hinton, "ImageNet classification with deep convolutional
neural networks", NIPS 2012), in two layouts:

- `alexnet`: the single-tower layout of torchvision (and of Krizhevsky's "One weird trick",
  2014): 64-192-384-256-256 convolutions, an adaptive average pool to 6x6 so any input size
  reaches the 9216-wide FC6, dropout before FC6 and FC7.
- `alexnet_original`: the 2012 paper at 227x227: the two GPU towers are grouped convolutions
  (conv2, conv4, conv5 see only their own tower's maps; conv3 reads both), local response
  normalization after conv1 and conv2, overlapping 3x3/2 max pools, dropout after FC6 and FC7.
"""

import typing

import keras

from zoo import common
from zoo.blocks import conv_norm_act
from zoo.layers import LocalResponseNormalization
from zoo.options import DEFAULT_LEAKY_SLOPE
from zoo.registry import register_model

PAPER = (
    "Krizhevsky, Sutskever & Hinton 2012, ImageNet classification with deep convolutional "
    "neural networks"
)
ARGUMENT_DOCS = {
    "dropout_rate": "dropout at FC6 and FC7 (before them in torchvision's layout, after them in "
    "the paper's), in [0, 1); 0 removes the Dropout layers.",
    "fc_units": "width of FC6 and FC7.",
    "local_response_norm": "local response normalization after conv1 and conv2; None: the "
    "layout's own choice (the paper's has it, torchvision's not).",
}


class Conv(typing.NamedTuple):
    filters: int
    kernel_size: int
    strides: int = 1
    padding: int = 0  # zeros on each side, as the reference implementations pad
    groups: int = 1  # 2 = the paper's two towers
    pool: bool = False  # an overlapping 3x3/2 max pool follows


class Layout(typing.NamedTuple):
    convs: tuple
    pooled_size: int | None  # adaptive average pool to this size before FC6
    dropout_before_fc: bool  # torchvision drops each hidden FC's input, the paper its output
    local_response_norm: bool  # LRN after conv1 and conv2 (after their ReLU), as in the paper


TORCHVISION = Layout(
    convs=(
        Conv(64, 11, strides=4, padding=2, pool=True),
        Conv(192, 5, padding=2, pool=True),
        Conv(384, 3, padding=1),
        Conv(256, 3, padding=1),
        Conv(256, 3, padding=1, pool=True),
    ),
    pooled_size=6,
    dropout_before_fc=True,
    local_response_norm=False,
)

KRIZHEVSKY_2012 = Layout(
    convs=(
        Conv(96, 11, strides=4, pool=True),
        Conv(256, 5, padding=2, groups=2, pool=True),
        Conv(384, 3, padding=1),
        Conv(384, 3, padding=1, groups=2),
        Conv(256, 3, padding=1, groups=2, pool=True),
    ),
    pooled_size=None,
    dropout_before_fc=False,
    local_response_norm=True,
)

LRN_AFTER = 2  # the paper normalizes the responses of the first two convolutions


def _conv_stage(x, index, conv, *, local_response_norm, options):
    name = f"conv{index}"
    padding = "valid"
    if conv.padding and conv.strides == 1 and conv.padding == conv.kernel_size // 2:
        padding = "same"  # identical to the symmetric zero padding
    elif conv.padding:
        # Strided "same" would pad 224 to 56 outputs; torchvision's 2 zeros a side give 55.
        x = keras.layers.ZeroPadding2D(conv.padding, name=f"{name}_pad")(x)
    x = conv_norm_act(
        x,
        conv.filters,
        conv.kernel_size,
        strides=conv.strides,
        padding=padding,
        groups=conv.groups,
        options=options,
        name=name,
    )
    if local_response_norm and index <= LRN_AFTER:
        x = LocalResponseNormalization(name=f"{name}_lrn")(x)
    if conv.pool:
        x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    return x


def _alexnet(
    input_shape,
    *,
    layout,
    num_classes=1000,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation="relu",
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer="he_normal",
    normalization="none",
    dropout_rate=0.5,
    weight_decay=0.0,
    fc_units=4096,
    local_response_norm=None,
    name="alexnet",
):
    """The one AlexNet builder: `layout` is TORCHVISION or KRIZHEVSKY_2012; the other arguments
    are documented on `alexnet` (ARGUMENT_DOCS)."""
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
    if local_response_norm not in (None, True, False):
        raise ValueError(
            f"{name}: local_response_norm must be None, True or False, got {local_response_norm!r}."
        )
    if local_response_norm is None:
        local_response_norm = layout.local_response_norm
    options = common.layer_options(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
    )

    inputs = common.model_input(input_shape)
    x = inputs
    for index, conv in enumerate(layout.convs, start=1):
        x = _conv_stage(x, index, conv, local_response_norm=local_response_norm, options=options)
    if not include_top:
        return keras.Model(inputs, common.pool_features(x, pooling), name=name)

    if layout.pooled_size:
        x = keras.layers.AdaptiveAveragePooling2D(layout.pooled_size, name="adaptive_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index in (6, 7):
        if dropout_rate and layout.dropout_before_fc:
            x = keras.layers.Dropout(dropout_rate, name=f"fc{index}_dropout")(x)
        x = options.dense(fc_units, name=f"fc{index}_dense")(x)
        x = options.act(name=f"fc{index}_act")(x)
        if dropout_rate and not layout.dropout_before_fc:
            x = keras.layers.Dropout(dropout_rate, name=f"fc{index}_dropout")(x)
    x = common.classifier(
        x, num_classes=num_classes, classifier_activation=classifier_activation, options=options
    )
    return keras.Model(inputs, x, name=name)


# Keras 3.15's AdaptiveAveragePooling2D fails in graph mode on a 1x1 map, so the last max pool
# must leave 2x2: 95 is the smallest input that does (63 would leave 1x1).
alexnet = register_model(
    "alexnet",
    _alexnet,
    fixed={"layout": TORCHVISION},
    paper=PAPER,
    summary="AlexNet as in torchvision: one tower, no LRN, adaptive average pool to 6x6.",
    default_input_shape=(224, 224, 3),
    min_input_size=95,
    argument_docs=ARGUMENT_DOCS,
)
# The smallest input whose last max pool still has a 3x3 map to pool (it gives 1x1).
alexnet_original = register_model(
    "alexnet_original",
    _alexnet,
    fixed={"layout": KRIZHEVSKY_2012},
    paper=PAPER,
    summary="AlexNet as in the 2012 paper: two towers as grouped convolutions, LRN, 227x227 input.",
    default_input_shape=(227, 227, 3),
    min_input_size=67,
    argument_docs=ARGUMENT_DOCS,
)

"""GoogLeNet (Szegedy et al., "Going deeper with convolutions", CVPR 2015; arXiv 2014): the
Inception v1 network of the paper's Table 1 and Figure 3.

Stem: conv 7x7/2 (64) - max pool 3x3/2 - LRN - conv 1x1 (64) - conv 3x3 (192) - LRN - max pool
3x3/2; then Inception modules 3a-3b, 4a-4e, 5a-5b with a 3x3/2 max pool between stages; then
global average pool (the paper's 7x7 average pool at 224), dropout 0.4 and the classifier.
The 5x5 branches are true 5x5 convolutions (torchvision's GoogLeNet uses 3x3 there). Pools pad
"same", which at 224 gives the paper's (and Caffe's ceil-mode) 112-56-28-14-7 maps.

With `aux_logits=True` the model also has the paper's two auxiliary classifiers (on 4a and 4d),
used in training only: its outputs are [main, aux1, aux2].
"""

import keras

from zoo import common
from zoo.blocks import conv_norm_act
from zoo.layers import LocalResponseNormalization
from zoo.options import DEFAULT_LEAKY_SLOPE, LayerOptions
from zoo.registry import register_model

PAPER = "Szegedy et al. 2014, Going deeper with convolutions"

# Table 1, one row per Inception module: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
# Stages 3, 4 and 5, each entered through a 3x3/2 max pool; modules are named 3a, 3b, 4a, ...
INCEPTION_V1_STAGES = (
    (
        (64, 96, 128, 16, 32, 32),
        (128, 128, 192, 32, 96, 64),
    ),
    (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    (
        (256, 160, 320, 32, 128, 128),
        (384, 192, 384, 48, 128, 128),
    ),
)
FIRST_STAGE = 3
AUX_HEAD_MODULES = ("4a", "4d")
# The auxiliary heads open with a 5x5/3 average pool on stage 4, which sees the input downsampled
# 16x with "same" (rounding up) padding: a 5x5 map there needs at least 16 * 4 + 1 pixels.
AUX_MIN_INPUT_SIZE = 65
ARGUMENT_DOCS = {
    "normalization": "'none' as in the paper; 'batch' puts BatchNorm after every convolution "
    "(without conv biases), and so on for the other normalizations.",
    "dropout_rate": "dropout before the classifier (the paper's 0.4), in [0, 1).",
    "batch_norm": "True: the common BatchNorm variant, shorthand for normalization='batch'.",
    "stages": "the Inception table as data: per stage (3, 4, 5), a list of module rows "
    "(#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).",
    "local_response_norm": "the two LRN layers of the paper's Figure 3.",
    "aux_logits": "add the two auxiliary classifiers (on 4a and 4d, for training): the outputs "
    "are then [main, aux1, aux2]; needs include_top and at least a 65x65 input.",
    "aux_dropout_rate": "dropout in the auxiliary classifiers, in [0, 1).",
}


def inception_module(x, filters, *, options: LayerOptions, name):
    """The Inception module with dimension reductions (Szegedy et al. 2014, Figure 2b): four
    parallel branches concatenated along channels, 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool
    (stride 1) -> 1x1 projection.

    `filters` is a row of the paper's Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
    pool proj).
    """
    if len(filters) != 6:
        raise ValueError(
            f"{name}: filters must be (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), "
            f"got {filters!r}."
        )
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = filters
    branch_1x1 = conv_norm_act(x, n1x1, 1, options=options, name=f"{name}_1x1")
    branch_3x3 = conv_norm_act(x, n3x3_reduce, 1, options=options, name=f"{name}_3x3_reduce")
    branch_3x3 = conv_norm_act(branch_3x3, n3x3, 3, options=options, name=f"{name}_3x3")
    branch_5x5 = conv_norm_act(x, n5x5_reduce, 1, options=options, name=f"{name}_5x5_reduce")
    branch_5x5 = conv_norm_act(branch_5x5, n5x5, 5, options=options, name=f"{name}_5x5")
    pooled = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch_pool = conv_norm_act(pooled, pool_proj, 1, options=options, name=f"{name}_pool_proj")
    return keras.layers.Concatenate(name=f"{name}_concat")(
        [branch_1x1, branch_3x3, branch_5x5, branch_pool]
    )


def _aux_head(x, *, num_classes, classifier_activation, dropout_rate, options, name):
    """Section 5: 5x5/3 average pool, 1x1 conv (128), FC 1024, dropout 0.7, linear classifier."""
    x = keras.layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = conv_norm_act(x, 128, 1, options=options, name=f"{name}_reduce")
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = options.dense(1024, name=f"{name}_fc_dense")(x)
    x = options.act(name=f"{name}_fc_act")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name=f"{name}_dropout")(x)
    return common.classifier(
        x,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        options=options,
        name=f"{name}_predictions",
    )


def _module_name(stage, index):
    """The paper's module names: 3a, 3b, 4a, ..."""
    return f"{stage}{chr(ord('a') + index)}"


def _check_stages(name, stages):
    if not stages or any(not modules for modules in stages):
        raise ValueError(f"{name}: stages must be non-empty lists of module rows, got {stages!r}.")
    for modules in stages:
        for row in modules:
            if len(row) != 6 or any(
                not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in row
            ):
                raise ValueError(
                    f"{name}: each Inception module is 6 positive integers (#1x1, #3x3 reduce, "
                    f"#3x3, #5x5 reduce, #5x5, pool proj), got {row!r}."
                )


def _googlenet(
    input_shape,
    *,
    num_classes=1000,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation="relu",
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer="glorot_uniform",
    normalization="none",
    dropout_rate=0.4,
    weight_decay=0.0,
    batch_norm=False,
    stages=INCEPTION_V1_STAGES,
    local_response_norm=True,
    aux_logits=False,
    aux_dropout_rate=0.7,
    name="googlenet",
):
    """The one GoogLeNet builder; its arguments are documented on `googlenet` (ARGUMENT_DOCS)."""
    if not isinstance(batch_norm, bool):
        raise ValueError(f"{name}: batch_norm must be True or False, got {batch_norm!r}.")
    if batch_norm:
        if normalization not in ("none", "batch"):
            raise ValueError(
                f"{name}: batch_norm=True contradicts "
                f"normalization={normalization!r}; pass one of them."
            )
        normalization = "batch"
    common.check_head_arguments(
        name,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
    )
    common.check_dropout(name, dropout_rate)
    common.check_dropout(name, aux_dropout_rate)
    _check_stages(name, stages)
    for knob, value in (("local_response_norm", local_response_norm), ("aux_logits", aux_logits)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: {knob} must be True or False, got {value!r}.")
    if aux_logits:
        if not include_top:
            raise ValueError(
                f"{name}: aux_logits=True needs include_top=True (the heads are classifiers)."
            )
        module_names = [
            _module_name(stage, index)
            for stage, rows in enumerate(stages, start=FIRST_STAGE)
            for index in range(len(rows))
        ]
        missing = [m for m in AUX_HEAD_MODULES if m not in module_names]
        if missing:
            raise ValueError(
                f"{name}: aux_logits=True attaches heads to modules {', '.join(AUX_HEAD_MODULES)}; "
                f"these stages have no module {', '.join(missing)}."
            )
        if min(input_shape[:2]) < AUX_MIN_INPUT_SIZE:
            raise ValueError(
                f"{name}: with aux_logits=True, input_shape {input_shape} is too small; the "
                f"auxiliary heads need at least {AUX_MIN_INPUT_SIZE}x{AUX_MIN_INPUT_SIZE} pixels."
            )
    options = common.layer_options(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
    )

    inputs = common.model_input(input_shape)
    x = conv_norm_act(inputs, 64, 7, strides=2, options=options, name="conv1")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    if local_response_norm:
        x = LocalResponseNormalization(name="pool1_lrn")(x)
    x = conv_norm_act(x, 64, 1, options=options, name="conv2_reduce")
    x = conv_norm_act(x, 192, 3, options=options, name="conv2")
    if local_response_norm:
        x = LocalResponseNormalization(name="conv2_lrn")(x)

    aux_outputs = []
    for stage, rows in enumerate(stages, start=FIRST_STAGE):
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{stage - 1}")(x)
        for index, row in enumerate(rows):
            module = _module_name(stage, index)
            x = inception_module(x, row, options=options, name=f"inception_{module}")
            if aux_logits and module in AUX_HEAD_MODULES:
                aux_outputs.append(
                    _aux_head(
                        x,
                        num_classes=num_classes,
                        classifier_activation=classifier_activation,
                        dropout_rate=aux_dropout_rate,
                        options=options,
                        name=f"aux{len(aux_outputs) + 1}",
                    )
                )

    outputs = common.global_pool_classifier(
        x,
        include_top=include_top,
        pooling=pooling,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
        options=options,
    )
    if aux_logits:
        outputs = [outputs, *aux_outputs]
    return keras.Model(inputs, outputs, name=name)


# Five stride-2 steps: 32 is the smallest input each of them halves (down to 1x1 before the
# average pool). With aux_logits=True the minimum is AUX_MIN_INPUT_SIZE.
googlenet = register_model(
    "googlenet",
    _googlenet,
    paper=PAPER,
    summary="GoogLeNet (Inception v1) as in the paper's Table 1, without BatchNorm.",
    default_input_shape=(224, 224, 3),
    min_input_size=32,
    argument_docs=ARGUMENT_DOCS,
)

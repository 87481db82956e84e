"""ResNet (He et al. 2015, "Deep Residual Learning for Image Recognition") and ResNet v2 (He et
al. 2016, "Identity Mappings in Deep Residual Networks"), ImageNet and CIFAR variants.

One builder, `build_resnet`, takes stage-wise lists (filters, blocks and stride per stage, as
keras-hub's ResNetBackbone does), a block type (basic or bottleneck), pre- or post-activation
and a shortcut type; the depth tables below are data and every registered model is a one-line
entry point over them.

Conventions, chosen so the parameter counts match the references exactly:
- resnet18/resnet34 follow torchvision: no convolution biases (BatchNorm follows each one; with
  biases they would have 4,800 / 8,512 more parameters), projection shortcuts (option B) where
  the channel count changes.
- resnet50/101/152 follow keras.applications ResNet50/101/152 layer for layer (their weights
  copy over): every convolution keeps its bias, and a bottleneck strides in its first 1x1
  convolution, as the original Caffe model did.
- resnet50_v2/101_v2/152_v2 follow keras.applications ResNet50V2/101V2/152V2: pre-activation
  bottlenecks that stride in the 3x3 convolution of each stage's LAST block (TF-slim's layout),
  biases only on convolutions that no BatchNorm follows, and a final norm + activation.
- resnet20..resnet110 are section 4.2 of the 2015 paper: 6n+2 layers, 16-32-64 filters,
  zero-padding shortcuts (option A), 10 classes at 32x32.
Every residual branch starts at zero (`zero_init_residual=True`, Goyal et al. 2017), so an
untrained network is well scaled; weights and parameter counts are unaffected.
BatchNorm uses epsilon 1.001e-5 (keras.applications, so outputs match after a weight copy) and
momentum 0.9 (torchvision's and fb.resnet.torch's 0.1 in PyTorch terms: statistics settle within
an epoch on small data). No preprocessing is built in: feed what the weights were trained on.
"""

import keras

from zoo import common
from zoo.blocks import RESIDUAL_BLOCKS, conv_norm_act
from zoo.options import DEFAULT_LEAKY_SLOPE
from zoo.registry import register_model

PAPER_V1 = "He et al. 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385"
PAPER_V2 = "He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027"

IMAGENET_FILTERS = (64, 128, 256, 512)
# Depth -> (block type, blocks per stage): table 1 of the 2015 paper.
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
CIFAR_FILTERS = (16, 32, 64)
STEMS = ("imagenet", "cifar")
BN = {"bn_momentum": 0.9, "bn_epsilon": 1.001e-5}
ARGUMENT_DOCS = {
    "dropout_rate": "dropout before the classifier, in [0, 1).",
    "width": "multiplies every stage's filters.",
    "preact": "the pre-activation (v2) layout of He et al. 2016.",
    "shortcut": "where a block changes the channel count: 'projection' (a 1x1 convolution, "
    "option B) or 'zero_pad' (parameter-free, option A).",
    "use_bias": "None: biases only on convolutions no normalization follows; True/False: on all "
    "or none.",
    "zero_init_residual": "start every residual branch at zero (Goyal et al. 2017), so an "
    "untrained deep network is well scaled.",
}


def _check_positive_ints(name, argument, values):
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(
            f"{name}: {argument} must be a non-empty list of positive integers, got {values!r}."
        )


def build_resnet(
    input_shape,
    *,
    stackwise_num_filters,
    stackwise_num_blocks,
    stackwise_num_strides,
    block_type,
    preact=False,
    shortcut="projection",
    stem="imagenet",
    stem_filters=64,
    stride_in_last_block=False,
    use_bias=None,
    zero_init_residual=True,
    num_classes=1000,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation="relu",
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer="he_normal",
    normalization="batch",
    dropout_rate=0.0,
    weight_decay=0.0,
    name="resnet",
):
    """The one ResNet builder.

    Stage i has `stackwise_num_blocks[i]` blocks of `stackwise_num_filters[i]` filters (a
    bottleneck's 3x3 width; it outputs 4x as many) and strides by `stackwise_num_strides[i]`
    in its first block (its last with `stride_in_last_block`). `stem` is "imagenet" (7x7/2
    convolution, 3x3/2 max pool) or "cifar" (3x3 convolution). `use_bias=None` biases only the
    convolutions no normalization follows; True/False biases all/none. `zero_init_residual`
    starts every residual branch at zero (Goyal et al. 2017; the papers did not, but an
    untrained deep ResNet's outputs otherwise blow up). `dropout_rate` applies before the
    classifier.
    """
    common.check_head_arguments(
        name,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
    )
    common.check_dropout(name, dropout_rate)
    for argument, values in (
        ("stackwise_num_filters", stackwise_num_filters),
        ("stackwise_num_blocks", stackwise_num_blocks),
        ("stackwise_num_strides", stackwise_num_strides),
    ):
        _check_positive_ints(name, argument, values)
    if not len(stackwise_num_filters) == len(stackwise_num_blocks) == len(stackwise_num_strides):
        raise ValueError(
            f"{name}: stackwise_num_filters, stackwise_num_blocks and stackwise_num_strides need "
            f"one entry per stage; got {len(stackwise_num_filters)}, {len(stackwise_num_blocks)} "
            f"and {len(stackwise_num_strides)}."
        )
    if block_type not in RESIDUAL_BLOCKS:
        raise ValueError(
            f"{name}: block_type must be one of {tuple(RESIDUAL_BLOCKS)}, got {block_type!r}."
        )
    if stem not in STEMS:
        raise ValueError(f"{name}: stem must be one of {STEMS}, got {stem!r}.")
    if use_bias not in (None, True, False):
        raise ValueError(
            f"{name}: use_bias must be None (only where no normalization follows), "
            f"True or False; got {use_bias!r}."
        )
    options = common.layer_options(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
        **BN,
    )

    inputs = common.model_input(input_shape)
    x = _stem(
        inputs, stem=stem, filters=stem_filters, preact=preact, use_bias=use_bias, options=options
    )

    block = RESIDUAL_BLOCKS[block_type]
    stages = zip(stackwise_num_filters, stackwise_num_blocks, stackwise_num_strides)
    for stage, (filters, blocks, stride) in enumerate(stages, start=2):
        strided_block = blocks if stride_in_last_block else 1
        for index in range(1, blocks + 1):
            x = block(
                x,
                filters,
                strides=stride if index == strided_block else 1,
                preact=preact,
                shortcut=shortcut,
                use_bias=use_bias,
                zero_init_residual=zero_init_residual,
                options=options,
                name=f"conv{stage}_block{index}",
            )
    if preact:
        x = options.apply_norm(x, name="post_norm")
        x = options.act(name="post_act")(x)

    x = common.global_pool_classifier(
        x,
        include_top=include_top,
        pooling=pooling,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
        options=options,
    )
    return keras.Model(inputs, x, name=name)


def _stem(x, *, stem, filters, preact, use_bias, options):
    """conv1 (and pool1 for ImageNet). Padded explicitly like keras.applications, so outputs
    match after a weight copy; a pre-activation network leaves the normalization and
    activation to its first block."""
    imagenet = stem == "imagenet"
    kernel_size, strides, padding = (7, 2, "valid") if imagenet else (3, 1, "same")
    if imagenet:
        x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    if preact:
        x = options.conv(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=True if use_bias is None else use_bias,
            name="conv1_conv",
        )(x)
    else:
        x = conv_norm_act(
            x,
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            options=options,
            name="conv1",
        )
    if imagenet:
        x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    return x


def _scaled(name, filters, width):
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(
            f"{name}: width must be a positive multiplier of the stage filters, got {width!r}."
        )
    return [max(1, round(f * width)) for f in filters]


def imagenet_resnet(
    input_shape,
    *,
    num_classes=1000,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    activation="relu",
    leaky_slope=DEFAULT_LEAKY_SLOPE,
    kernel_initializer="he_normal",
    normalization="batch",
    dropout_rate=0.0,
    weight_decay=0.0,
    depth=50,
    width=1.0,
    preact=False,
    shortcut="projection",
    use_bias=None,
    zero_init_residual=True,
    name="resnet",
):
    """An ImageNet ResNet of `depth` in 18, 34, 50, 101, 152 (table 1 of the 2015 paper);
    `width` multiplies every stage's filters; `preact=True` gives the v2 layout. The other
    arguments are `build_resnet`'s."""
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(
            f"{name}: ImageNet ResNet depth must be one of "
            f"{sorted(IMAGENET_DEPTHS)}, got {depth!r}."
        )
    block_type, blocks = IMAGENET_DEPTHS[depth]
    return build_resnet(
        input_shape,
        stackwise_num_filters=_scaled(name, IMAGENET_FILTERS, width),
        stackwise_num_blocks=list(blocks),
        # v2 (keras.applications, TF-slim) strides at the end of stages 2-4, v1 at the start of
        # stages 3-5: the same total stride of 32.
        stackwise_num_strides=[2, 2, 2, 1] if preact else [1, 2, 2, 2],
        stride_in_last_block=preact,
        block_type=block_type,
        preact=preact,
        stem="imagenet",
        shortcut=shortcut,
        use_bias=use_bias,
        zero_init_residual=zero_init_residual,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        dropout_rate=dropout_rate,
        weight_decay=weight_decay,
        name=name,
    )


def cifar_resnet(
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
    dropout_rate=0.0,
    weight_decay=0.0,
    depth=20,
    width=1.0,
    preact=False,
    shortcut="zero_pad",
    use_bias=None,
    zero_init_residual=True,
    name="resnet",
):
    """A CIFAR ResNet (section 4.2 of the 2015 paper): depth = 6n + 2, n basic blocks in each
    of three stages of 16, 32, 64 filters (times `width`). The other arguments are
    `build_resnet`'s."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"{name}: CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, "
            f"32, ...), got {depth!r}."
        )
    stage_filters = _scaled(name, CIFAR_FILTERS, width)
    return build_resnet(
        input_shape,
        stackwise_num_filters=stage_filters,
        stackwise_num_blocks=[(depth - 2) // 6] * 3,
        stackwise_num_strides=[1, 2, 2],
        block_type="basic",
        preact=preact,
        shortcut=shortcut,
        stem="cifar",
        stem_filters=stage_filters[0],
        use_bias=use_bias,
        zero_init_residual=zero_init_residual,
        num_classes=num_classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        dropout_rate=dropout_rate,
        weight_decay=weight_decay,
        name=name,
    )


def _imagenet(name, depth, summary, *, preact=False, use_bias=None, **registration):
    # Total stride 32: the smallest input that reaches a 1x1 map without a degenerate stride.
    return register_model(
        name,
        imagenet_resnet,
        defaults={"depth": depth, "preact": preact, "use_bias": use_bias},
        summary=summary,
        paper=PAPER_V2 if preact else PAPER_V1,
        default_input_shape=(224, 224, 3),
        min_input_size=32,
        **registration,
        argument_docs={
            **ARGUMENT_DOCS,
            "depth": "18, 34, 50, 101 or 152 (table 1 of the 2015 paper).",
        },
    )


def _cifar(name, depth):
    # Total stride 4: the same rule as the ImageNet models' 32.
    return register_model(
        name,
        cifar_resnet,
        defaults={"depth": depth},
        summary=f"ResNet-{depth} for CIFAR (section 4.2 of the 2015 paper): 16-32-64 filters, "
        "zero-padding shortcuts, 10 classes at 32x32.",
        paper=PAPER_V1,
        default_input_shape=(32, 32, 3),
        min_input_size=4,
        argument_docs={
            **ARGUMENT_DOCS,
            "depth": "6n + 2 layers: n basic blocks per stage (8, 14, 20, 32, ...).",
        },
    )


_TORCHVISION = "as in torchvision: no convolution biases, projection shortcuts"
_KERAS_V1 = "layer for layer keras.applications.ResNet{}: biased convolutions, strided first 1x1"
_KERAS_V2 = "layer for layer keras.applications.ResNet{}V2: pre-activation bottlenecks"

resnet18 = _imagenet("resnet18", 18, f"ResNet-18, {_TORCHVISION}.")
resnet34 = _imagenet("resnet34", 34, f"ResNet-34, {_TORCHVISION}.")
resnet50 = _imagenet(
    "resnet50",
    50,
    f"ResNet-50, {_KERAS_V1.format(50)}.",
    use_bias=True,
    keras_application=keras.applications.ResNet50,
)
resnet101 = _imagenet(
    "resnet101",
    101,
    f"ResNet-101, {_KERAS_V1.format(101)}.",
    use_bias=True,
    keras_application=keras.applications.ResNet101,
)
resnet152 = _imagenet(
    "resnet152",
    152,
    f"ResNet-152, {_KERAS_V1.format(152)}.",
    use_bias=True,
    keras_application=keras.applications.ResNet152,
)
resnet50_v2 = _imagenet(
    "resnet50_v2",
    50,
    f"ResNet-50 v2, {_KERAS_V2.format(50)}.",
    preact=True,
    keras_application=keras.applications.ResNet50V2,
)
resnet101_v2 = _imagenet(
    "resnet101_v2",
    101,
    f"ResNet-101 v2, {_KERAS_V2.format(101)}.",
    preact=True,
    keras_application=keras.applications.ResNet101V2,
)
resnet152_v2 = _imagenet(
    "resnet152_v2",
    152,
    f"ResNet-152 v2, {_KERAS_V2.format(152)}.",
    preact=True,
    keras_application=keras.applications.ResNet152V2,
)
resnet20 = _cifar("resnet20", 20)
resnet32 = _cifar("resnet32", 32)
resnet44 = _cifar("resnet44", 44)
resnet56 = _cifar("resnet56", 56)
resnet110 = _cifar("resnet110", 110)

"""Building blocks shared by the families: conv-norm-activation, depthwise-separable and inverted
residual blocks, squeeze-excitation, and basic/bottleneck residual blocks. Layers and blocks that
only one family uses live with it (`zoo/layers/`, the family module).

Blocks are functions `block(x, ..., options, name) -> y` on symbolic tensors; every layer they
make is named `f"{name}_<part>"`, so layer names are deterministic and weights load by name.
Custom layers use `keras.ops` only, so models save to `.keras` and reload with safe_mode=True.
"""

import keras

from zoo.options import LayerOptions


def conv_norm_act(
    x,
    filters,
    kernel_size,
    *,
    options: LayerOptions,
    name,
    strides=1,
    padding="same",
    use_bias=None,
    activation=True,
    groups=1,
    norm_kwargs=None,
):
    """Conv2D -> normalization -> activation (`activation=False` skips it, a name overrides it)."""
    x = options.conv(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        groups=groups,
        name=f"{name}_conv",
    )(x)
    x = options.apply_norm(x, name=f"{name}_norm", **(norm_kwargs or {}))
    if activation:
        chosen = None if activation is True else activation
        x = options.act(name=f"{name}_act", activation=chosen)(x)
    return x


# --- Mobile blocks: MobileNet v1/v2 and squeeze-excitation ---------------------------------------


def depthwise_separable_block(
    x, filters, *, options: LayerOptions, name, strides=1, depth_multiplier=1
):
    """MobileNet v1's block (Howard et al. 2017, fig. 3): depthwise 3x3 -> norm -> act, then a
    pointwise 1x1 -> norm -> act. "same" padding on a strided depthwise conv pads like
    keras.applications' explicit ((0, 1), (0, 1)) padding whenever the input size is even."""
    x = options.depthwise_conv(
        3, strides=strides, depth_multiplier=depth_multiplier, name=f"{name}_depthwise_conv"
    )(x)
    x = options.apply_norm(x, name=f"{name}_depthwise_norm")
    x = options.act(name=f"{name}_depthwise_act")(x)
    return conv_norm_act(x, filters, 1, options=options, name=f"{name}_pointwise")


def inverted_residual_block(x, filters, *, expansion, options: LayerOptions, name, strides=1):
    """MobileNetV2's block (Sandler et al. 2018, table 1): expand 1x1 -> depthwise 3x3 -> linear
    1x1 projection, with an identity shortcut when the output has the input's shape.

    `expansion=1` skips the expansion conv (the first block of MobileNetV2). TensorFlow's "same"
    padding on the strided depthwise conv equals keras.applications' explicit `correct_pad`.
    """
    inputs = x
    in_channels = x.shape[-1]
    if expansion != 1:
        x = conv_norm_act(x, expansion * in_channels, 1, options=options, name=f"{name}_expand")
    x = options.depthwise_conv(3, strides=strides, name=f"{name}_depthwise_conv")(x)
    x = options.apply_norm(x, name=f"{name}_depthwise_norm")
    x = options.act(name=f"{name}_depthwise_act")(x)
    # Linear bottleneck: an activation here would destroy information in the narrow layer.
    x = conv_norm_act(x, filters, 1, options=options, activation=False, name=f"{name}_project")
    if strides == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def squeeze_excitation(x, *, options: LayerOptions, name, reduction=16, activation=None):
    """Squeeze-and-excitation (Hu et al. 2018): global average pool -> reduce by `reduction` ->
    activation (the options' by default) -> expand -> sigmoid -> rescale the channels of `x`.

    The two fully connected layers are 1x1 convolutions on the pooled 1x1 map (the same weights
    as dense layers), so the gate broadcasts over height and width without a reshape.
    """
    channels = x.shape[-1]
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    gate = options.conv(max(1, channels // reduction), 1, use_bias=True, name=f"{name}_reduce")(
        squeezed
    )
    gate = options.act(name=f"{name}_reduce_act", activation=activation)(gate)
    gate = options.conv(channels, 1, use_bias=True, name=f"{name}_expand")(gate)
    gate = keras.layers.Activation("sigmoid", name=f"{name}_gate")(gate)
    return keras.layers.Multiply(name=f"{name}_scale")([x, gate])


# --- Residual blocks (He et al. 2015, "Deep Residual Learning"; He et al. 2016, "Identity
# Mappings in Deep Residual Networks"). The layer creation order follows keras.applications'
# resnet.py (shortcut before the main path), so `zoo.weights.copy_weights` pairs their layers.

SHORTCUTS = ("projection", "zero_pad")


@keras.saving.register_keras_serializable(package="zoo")
class ParameterFreeShortcut(keras.layers.Layer):
    """Option A of He et al. 2015: subsample by `strides`, then append zero channels up to
    `filters`. Without weights, so a block changes shape without adding parameters."""

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides

    def build(self, input_shape):
        if input_shape[-1] > self.filters:
            raise ValueError(
                f"{self.name}: a zero-padding shortcut can only add channels; it received "
                f"{input_shape[-1]} channels for a block of {self.filters}."
            )

    def call(self, x):
        if self.strides > 1:
            # x[:, ::s, ::s, :] as a 1x1 average pool: the same values, and a training step of
            # resnet20 runs 1.17x faster than with TensorFlow's StridedSlice and its gradient
            # (benchmarks.profile ranked them at 7% of the step, bfloat16 on a 2-core CPU).
            x = keras.ops.average_pool(
                x, 1, strides=self.strides, padding="valid", data_format="channels_last"
            )
        extra = self.filters - x.shape[-1]
        if extra:
            x = keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape):
        def subsampled(size):
            return None if size is None else -(-size // self.strides)

        batch, height, width, _ = input_shape
        return (batch, subsampled(height), subsampled(width), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


def _bias_without_norm(use_bias):
    # A convolution that no normalization follows keeps its bias unless told otherwise.
    return True if use_bias is None else use_bias


def _strided_conv_norm_act(x, filters, kernel_size, *, strides, options, name, use_bias):
    """conv_norm_act whose strided k x k convolution pads k//2 on every side, as the papers'
    Caffe/Torch models (and torchvision, keras.applications v2) do; TF's "same" would pad
    only the bottom/right of an even-sized map and shift the sampling grid."""
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return conv_norm_act(
        x,
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        options=options,
        name=name,
    )


def residual_shortcut(
    x, preactivated, filters, *, strides, shortcut, preact, use_bias, options: LayerOptions, name
):
    """The identity path of a residual block, producing `filters` channels.

    Identity when the shape is unchanged; a channel change uses a 1x1 projection (option B,
    from the pre-activated input in a pre-activation block, normalized in a post-activation
    one) or zero padding (option A); a stride alone subsamples (keras.applications v2 does the
    same with a 1x1 max pool).
    """
    if shortcut not in SHORTCUTS:
        raise ValueError(f"{name}: shortcut must be one of {SHORTCUTS}, got {shortcut!r}.")
    if x.shape[-1] == filters and strides == 1:
        return x
    if x.shape[-1] != filters and shortcut == "projection":
        if preact:
            return options.conv(
                filters,
                1,
                strides=strides,
                use_bias=_bias_without_norm(use_bias),
                name=f"{name}_0_conv",
            )(preactivated)
        return conv_norm_act(
            x,
            filters,
            1,
            strides=strides,
            use_bias=use_bias,
            activation=False,
            options=options,
            name=f"{name}_0",
        )
    return ParameterFreeShortcut(filters, strides, name=f"{name}_0_shortcut")(x)


def _preactivate(x, *, preact, options, name):
    if not preact:
        return x
    x = options.apply_norm(x, name=f"{name}_preact_norm")
    return options.act(name=f"{name}_preact_act")(x)


def _merge(shortcut, residual, *, preact, options, name):
    # Post-activation (v1) blocks activate after the sum; pre-activation (v2) blocks leave the
    # sum alone so the identity path stays clean (He et al. 2016).
    if preact:
        return keras.layers.Add(name=f"{name}_out")([shortcut, residual])
    x = keras.layers.Add(name=f"{name}_add")([shortcut, residual])
    return options.act(name=f"{name}_out")(x)


def _reconfigured(layer, **changes):
    return type(layer).from_config({**layer.get_config(), **changes})


def _last_conv(y, filters, kernel_size, *, preact, zero_init, use_bias, options, name):
    """The residual branch's last convolution, normalized in a post-activation block.

    `zero_init` starts the branch at zero, so an untrained block is its shortcut (Goyal et al.
    2017; torchvision's zero_init_residual, timm's zero_init_last): the normalization's scale
    starts at zero, or the kernel where no normalization follows. Without it, activations
    roughly double per block and an untrained ResNet-50's logits saturate a float32 sigmoid.
    """
    norm = None if preact else options.norm(name=f"{name}_norm", channels=filters)
    conv = options.conv(
        filters,
        kernel_size,
        name=f"{name}_conv",
        use_bias=use_bias if norm else _bias_without_norm(use_bias),
    )
    if zero_init and norm:
        norm = _reconfigured(norm, gamma_initializer="zeros")
    elif zero_init:
        conv = _reconfigured(conv, kernel_initializer="zeros")
    y = conv(y)
    return norm(y) if norm else y


def basic_block(
    x,
    filters,
    *,
    options: LayerOptions,
    name,
    strides=1,
    preact=False,
    shortcut="projection",
    use_bias=None,
    zero_init_residual=True,
):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets); the first one strides.

    `preact=False` is the post-activation block of He et al. 2015 (conv-norm-act, conv-norm,
    add, act); `preact=True` the pre-activation block of He et al. 2016 (norm-act, conv,
    norm-act, conv, add). `use_bias=None` biases only the convolutions no normalization follows;
    `zero_init_residual` starts the residual branch at zero (see `_last_conv`).
    """
    preactivated = _preactivate(x, preact=preact, options=options, name=name)
    identity = residual_shortcut(
        x,
        preactivated,
        filters,
        strides=strides,
        shortcut=shortcut,
        preact=preact,
        use_bias=use_bias,
        options=options,
        name=name,
    )
    y = _strided_conv_norm_act(
        preactivated,
        filters,
        3,
        strides=strides,
        use_bias=use_bias,
        options=options,
        name=f"{name}_1",
    )
    y = _last_conv(
        y,
        filters,
        3,
        preact=preact,
        zero_init=zero_init_residual,
        use_bias=use_bias,
        options=options,
        name=f"{name}_2",
    )
    return _merge(identity, y, preact=preact, options=options, name=name)


def bottleneck_block(
    x,
    filters,
    *,
    options: LayerOptions,
    name,
    strides=1,
    preact=False,
    shortcut="projection",
    use_bias=None,
    zero_init_residual=True,
    expansion=4,
):
    """1x1 reduce to `filters`, 3x3, 1x1 expand to `expansion * filters` (ResNet-50/101/152).

    As in keras.applications: the post-activation block strides in its first 1x1 convolution
    (the original Caffe model), the pre-activation block in its 3x3 convolution. The other
    arguments are `basic_block`'s.
    """
    out_channels = expansion * filters
    preactivated = _preactivate(x, preact=preact, options=options, name=name)
    identity = residual_shortcut(
        x,
        preactivated,
        out_channels,
        strides=strides,
        shortcut=shortcut,
        preact=preact,
        use_bias=use_bias,
        options=options,
        name=name,
    )
    y = conv_norm_act(
        preactivated,
        filters,
        1,
        strides=1 if preact else strides,
        use_bias=use_bias,
        options=options,
        name=f"{name}_1",
    )
    y = _strided_conv_norm_act(
        y,
        filters,
        3,
        strides=strides if preact else 1,
        use_bias=use_bias,
        options=options,
        name=f"{name}_2",
    )
    y = _last_conv(
        y,
        out_channels,
        1,
        preact=preact,
        zero_init=zero_init_residual,
        use_bias=use_bias,
        options=options,
        name=f"{name}_3",
    )
    return _merge(identity, y, preact=preact, options=options, name=name)


RESIDUAL_BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}

"""Cross-cutting layer options, resolved from names in one place.

Every family builds its convolutions, dense layers, normalizations and activations through a
`LayerOptions`, so `activation="gelu"`, `leaky_slope=...`, `normalization="group"`,
`kernel_initializer=...` and `weight_decay=...` mean the same thing in every model.
"""

import dataclasses
import math

import keras
from keras import ops

from zoo.layers.fused_batch_normalization import FusedBatchNormalization


@keras.saving.register_keras_serializable(package="zoo")
def lecun_tanh(x):
    """LeCun's scaled tanh, 1.7159 * tanh(2x/3) (LeCun et al. 1998, appendix A)."""
    return 1.7159 * ops.tanh(x * (2.0 / 3.0))


ACTIVATIONS = {
    "relu": "relu",
    "relu6": "relu6",
    "leaky_relu": "leaky_relu",
    "elu": "elu",
    "selu": "selu",
    "gelu": "gelu",
    "swish": "silu",
    "silu": "silu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "lecun_tanh": lecun_tanh,
    "linear": "linear",
}

INITIALIZERS = (
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
    "truncated_normal",
    "random_normal",
    "random_uniform",
    "zeros",  # never for training: the doctor's planted mistake (no symmetry breaking)
)

NORMALIZATIONS = ("batch", "layer", "group", "instance", "none")


def _check_choice(kind, value, allowed):
    if value not in allowed:
        raise ValueError(f"Unknown {kind} {value!r}; allowed: {', '.join(sorted(allowed))}.")


def activation_function(name):
    """The Keras activation for a zoo activation name."""
    _check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]


# The course notes' leaky ReLU slope; Keras' own default (0.2) is 20 times steeper.
DEFAULT_LEAKY_SLOPE = 0.01


def check_leaky_slope(slope):
    """A leaky ReLU's negative slope must be a number in [0, 1) (0 is a plain ReLU)."""
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0 <= slope < 1:
        raise ValueError(f"leaky_slope must be a number in [0, 1), got {slope!r}.")


def group_count(channels, preferred=32):
    """The largest group count <= `preferred` that divides `channels` (GroupNorm needs a
    divisor)."""
    return math.gcd(channels, preferred)


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """How a model's layers are made. Families pass one of these down to every block."""

    activation: str = "relu"
    leaky_slope: float = DEFAULT_LEAKY_SLOPE
    kernel_initializer: str = "he_normal"
    normalization: str = "batch"
    weight_decay: float = 0.0
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3

    def __post_init__(self):
        activation_function(self.activation)
        check_leaky_slope(self.leaky_slope)
        _check_choice("kernel_initializer", self.kernel_initializer, INITIALIZERS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")

    @property
    def normalized(self):
        return self.normalization != "none"

    def regularizer(self):
        # L2 on kernels only: decaying biases and norm scales hurts (and is not what papers do).
        return keras.regularizers.L2(self.weight_decay) if self.weight_decay else None

    def conv(
        self,
        filters,
        kernel_size,
        *,
        name,
        strides=1,
        padding="same",
        use_bias=None,
        groups=1,
        dilation_rate=1,
    ):
        """A Conv2D; without an explicit `use_bias`, biased only when no normalization follows."""
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            groups=groups,
            dilation_rate=dilation_rate,
            use_bias=(not self.normalized) if use_bias is None else use_bias,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.regularizer(),
            name=name,
        )

    def depthwise_conv(
        self, kernel_size, *, name, strides=1, padding="same", depth_multiplier=1, use_bias=None
    ):
        return keras.layers.DepthwiseConv2D(
            kernel_size,
            strides=strides,
            padding=padding,
            depth_multiplier=depth_multiplier,
            use_bias=(not self.normalized) if use_bias is None else use_bias,
            depthwise_initializer=self.kernel_initializer,
            depthwise_regularizer=self.regularizer(),
            name=name,
        )

    def dense(self, units, *, name, use_bias=True, kernel_initializer=None):
        return keras.layers.Dense(
            units,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer or self.kernel_initializer,
            kernel_regularizer=self.regularizer(),
            name=name,
        )

    def norm(self, *, name, channels=None, epsilon=None, momentum=None):
        """The chosen normalization, or None for "none". `channels` is needed for "group"."""
        epsilon = self.bn_epsilon if epsilon is None else epsilon
        if self.normalization == "none":
            return None
        if self.normalization == "batch":
            return FusedBatchNormalization(
                momentum=self.bn_momentum if momentum is None else momentum,
                epsilon=epsilon,
                name=name,
            )
        if self.normalization == "layer":
            return keras.layers.LayerNormalization(epsilon=epsilon, name=name)
        if self.normalization == "instance":
            return keras.layers.GroupNormalization(groups=-1, epsilon=epsilon, name=name)
        if channels is None:
            raise ValueError("group normalization needs the channel count")
        return keras.layers.GroupNormalization(
            groups=group_count(channels), epsilon=epsilon, name=name
        )

    def act(self, *, name, activation=None):
        """The activation layer; leaky_relu gets a LeakyReLU with this `leaky_slope` (the
        "leaky_relu" activation string would fix Keras' slope of 0.2)."""
        activation = activation or self.activation
        if activation == "leaky_relu":
            return keras.layers.LeakyReLU(negative_slope=self.leaky_slope, name=name)
        return keras.layers.Activation(activation_function(activation), name=name)

    def apply_norm(self, x, *, name, **kwargs):
        """Normalize `x` (a no-op for normalization="none")."""
        layer = self.norm(name=name, channels=x.shape[-1], **kwargs)
        return x if layer is None else layer(x)

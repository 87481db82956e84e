"""A convolution whose output maps each read a chosen subset of the input maps: LeNet-5's C3
(LeCun et al. 1998, Table I)."""

import keras

# Table I of the paper: the S2 maps each C3 map reads. Maps 0-5 read 3 contiguous maps, 6-11 read
# 4 contiguous ones, 12-14 read 4 non-contiguous ones and 15 reads all six (60 connections).
LECUN_C3_CONNECTIONS = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (4, 5, 0),
    (5, 0, 1),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (3, 4, 5, 0),
    (4, 5, 0, 1),
    (5, 0, 1, 2),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


@keras.saving.register_keras_serializable(package="zoo")
class PartialConnectionConv2D(keras.layers.Layer):
    """A convolution in which output map `o` reads only the input maps `connections[o]`.

    Only the connected weights exist (kernel shape `(kh, kw, connections)`, one bias per output
    map); each call scatters them into a dense `(kh, kw, in, out)` kernel and runs one convolution.
    """

    def __init__(
        self,
        connections=LECUN_C3_CONNECTIONS,
        kernel_size=5,
        *,
        strides=1,
        padding="valid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.connections = _check_connections(connections)
        self.filters = len(self.connections)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}.")
        self.padding = padding
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        self.input_channels = int(input_shape[-1])
        highest = max(max(inputs) for inputs in self.connections)
        if highest >= self.input_channels:
            raise ValueError(
                f"{self.name}: the connection table reads input map {highest}, but the input has "
                f"{self.input_channels} channels."
            )
        # Position of each connection (input i -> output o) in a flattened (in, out) kernel.
        self._flat_indices = [
            i * self.filters + o for o, inputs in enumerate(self.connections) for i in inputs
        ]
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(
            shape=(kh, kw, len(self._flat_indices)),
            initializer=self._connected_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        self.bias = (
            self.add_weight(shape=(self.filters,), initializer=self.bias_initializer, name="bias")
            if self.use_bias
            else None
        )

    def _connected_initializer(self, shape, dtype=None):
        # Draw as for the dense kernel, so fan-in/fan-out scaling matches an ordinary Conv2D.
        kh, kw = self.kernel_size
        dense = self.kernel_initializer((kh, kw, self.input_channels, self.filters), dtype=dtype)
        dense = keras.ops.reshape(dense, (kh * kw, self.input_channels * self.filters))
        return keras.ops.reshape(keras.ops.take(dense, self._flat_indices, axis=1), shape)

    def dense_kernel(self):
        """The `(kh, kw, in, out)` kernel with zeros where maps are not connected."""
        kh, kw = self.kernel_size
        scatter = keras.ops.one_hot(
            keras.ops.convert_to_tensor(self._flat_indices, dtype="int32"),
            self.input_channels * self.filters,
            dtype=self.kernel.dtype,
        )
        flat = keras.ops.matmul(keras.ops.reshape(self.kernel, (kh * kw, -1)), scatter)
        return keras.ops.reshape(flat, (kh, kw, self.input_channels, self.filters))

    def call(self, inputs):
        kernel = keras.ops.cast(self.dense_kernel(), inputs.dtype)
        outputs = keras.ops.conv(inputs, kernel, strides=self.strides, padding=self.padding)
        if self.bias is not None:
            outputs = outputs + keras.ops.cast(self.bias, outputs.dtype)
        return outputs

    def flops(self):
        """Multiply-adds of the existing connections only, 2 FLOPs each, for one example."""
        positions = int(self.output.shape[1]) * int(self.output.shape[2])
        kh, kw = self.kernel_size
        return 2 * positions * len(self._flat_indices) * kh * kw

    def get_config(self):
        return {
            **super().get_config(),
            "connections": [list(inputs) for inputs in self.connections],
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


def _pair(what, value):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in pair):
        raise ValueError(f"{what} must be a positive integer or a pair of them, got {value!r}.")
    return pair


def _check_connections(connections):
    """The connection table as a tuple of tuples, or a ValueError saying what is wrong."""
    table = tuple(tuple(inputs) for inputs in connections)
    if not table:
        raise ValueError("connections must list the input maps of at least one output map.")
    for output, inputs in enumerate(table):
        if (
            not inputs
            or len(set(inputs)) != len(inputs)
            or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in inputs)
        ):
            raise ValueError(
                f"connections[{output}] must be distinct non-negative input map indices, "
                f"got {list(inputs)!r}."
            )
    return table

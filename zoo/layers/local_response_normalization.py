"""Local response normalization (Krizhevsky et al. 2012), used by AlexNet and GoogLeNet."""

import keras


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels (Krizhevsky et al. 2012, section 3.3):

        b_c = a_c / (k + alpha * sum of a_j ** 2 over |j - c| <= size // 2) ** beta

    where the sum runs over the neighbouring channels that exist. This is the paper's convention:
    alpha multiplies the plain sum (Caffe's LRN divides alpha by `size` first).
    """

    def __init__(self, size=5, k=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
            raise ValueError(
                f"LocalResponseNormalization: size must be a positive odd integer (a window "
                f"centred on each channel), got {size!r}."
            )
        if not k > 0:
            raise ValueError(f"LocalResponseNormalization: k must be > 0, got {k!r}.")
        self.size = size
        self.k = float(k)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        # Computed in float32: in bfloat16, k + alpha * sum rounds back to k for typical inputs.
        x = keras.ops.cast(inputs, "float32")
        radius = self.size // 2
        channels = x.shape[-1]
        padding = [[0, 0]] * (len(x.shape) - 1) + [[radius, radius]]
        squares = keras.ops.pad(keras.ops.square(x), padding)
        window_sum = sum(squares[..., offset : offset + channels] for offset in range(self.size))
        outputs = x / keras.ops.power(self.k + self.alpha * window_sum, self.beta)
        return keras.ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "k": self.k,
            "alpha": self.alpha,
            "beta": self.beta,
        }

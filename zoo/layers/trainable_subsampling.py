"""LeNet-5's trainable subsampling (LeCun et al. 1998): S2 and S4."""

import keras


@keras.saving.register_keras_serializable(package="zoo")
class TrainableSubsampling(keras.layers.Layer):
    """LeNet-5's S2/S4: the mean of each non-overlapping `pool_size` window, times one trainable
    coefficient per map, plus one trainable bias per map. The caller applies the activation.

    Like normalization's per-channel scale, the coefficient is left out of FLOP counts.
    """

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}.")
        self.pool_size = pool_size

    def build(self, input_shape):
        channels = input_shape[-1]
        self.coefficient = self.add_weight(
            shape=(channels,), initializer="ones", name="coefficient"
        )
        self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")

    def call(self, inputs):
        pooled = keras.ops.average_pool(
            inputs, self.pool_size, strides=self.pool_size, padding="valid"
        )
        return pooled * self.coefficient + self.bias

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}

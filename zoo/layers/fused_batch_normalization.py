"""Keras' BatchNormalization, computed by TensorFlow's fused kernel.

Keras 3 computes batch normalization from separate ops (cast to float32, moments, normalize);
Keras 2 called TensorFlow's single FusedBatchNormV3 kernel. On CPU the separate ops made BN a large
share of a ResNet's training step: resnet20 at batch 128 trained 1.8x faster with the fused
kernel on this project's 2-core machine (README, Speed). This layer is Keras' own with only the
arithmetic swapped: the same variables, config and momentum semantics (the moving variance stays
the biased batch variance, as in Keras), so parameter counts, keras.applications weights and
checkpoints are unchanged. TensorFlow raises an epsilon below 1.001e-5 to that value, as Keras 2
did. Whatever the fused kernel cannot do (masks, renorm, synchronized BN, non-4D inputs, a
channel axis other than the last, other backends) falls back to Keras' code.

bfloat16 activations with a channel count that is not a multiple of 16 are normalized in
float32: oneDNN's compiled bfloat16 kernel needs whole AVX-512 vectors of 16 channels, and
other widths run its generic C++ fallback (`nspc_bnorm:any` in its verbose log), which on a
2-core AMX Xeon took 5.8 ms forward for 128x16x16x24 against 0.55 ms at 32 channels, while the
float32 kernel takes any width (1.4 ms at 24; 2026-12-06, docs/speed.md). The result is the
same up to bfloat16's rounding of the output, which happens either way.
"""

import keras
import tensorflow as tf

# oneDNN's bfloat16 BatchNorm kernels work on whole vectors of this many channels.
BFLOAT16_CHANNEL_MULTIPLE = 16


@keras.saving.register_keras_serializable(package="zoo")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    def _fusable(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype in (tf.float32, tf.bfloat16, tf.float16)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        if inputs.dtype == tf.bfloat16 and channels % BFLOAT16_CHANNEL_MULTIPLE:
            inputs = tf.cast(inputs, tf.float32)  # the module docstring says why
        # The kernel takes float16/bfloat16 activations with float32 parameters and statistics,
        # so mixed precision needs no cast of the activations.
        gamma = self.gamma if self.scale else tf.ones((channels,), tf.float32)
        beta = self.beta if self.center else tf.zeros((channels,), tf.float32)
        moving_mean = tf.convert_to_tensor(self.moving_mean)
        moving_variance = tf.convert_to_tensor(self.moving_variance)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                epsilon=self.epsilon,
                is_training=True,
                data_format="NHWC",
            )
            # The kernel returns the unbiased (Bessel-corrected) variance; Keras' moving variance
            # averages the biased one, which is also what the kernel normalized with.
            shape = tf.shape(inputs)
            count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=moving_mean,
                variance=moving_variance,
                epsilon=self.epsilon,
                is_training=False,
                data_format="NHWC",
            )
        return tf.cast(outputs, self.compute_dtype)

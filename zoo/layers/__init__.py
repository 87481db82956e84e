"""Custom Keras layers, one per file: what a single family needs (LRN: AlexNet and GoogLeNet), and
Keras' BatchNormalization on TensorFlow's fused kernel, which every normalized model uses.

They are registered as `zoo>ClassName` for `.keras` files; the names must never change, or saved
models stop loading.
"""

from zoo.layers.fused_batch_normalization import FusedBatchNormalization
from zoo.layers.local_response_normalization import LocalResponseNormalization
from zoo.layers.partial_connection_conv import LECUN_C3_CONNECTIONS, PartialConnectionConv2D
from zoo.layers.trainable_subsampling import TrainableSubsampling

__all__ = [
    "LECUN_C3_CONNECTIONS",
    "FusedBatchNormalization",
    "LocalResponseNormalization",
    "PartialConnectionConv2D",
    "TrainableSubsampling",
]

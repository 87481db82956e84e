"""Custom Keras layers that a single family needs (LRN: AlexNet and GoogLeNet), one per file.

They are registered as `zoo>ClassName` for `.keras` files; the names must never change, or saved
models stop loading.
"""

from zoo.layers.local_response_normalization import LocalResponseNormalization
from zoo.layers.partial_connection_conv import LECUN_C3_CONNECTIONS, PartialConnectionConv2D
from zoo.layers.trainable_subsampling import TrainableSubsampling

__all__ = [
    "LECUN_C3_CONNECTIONS",
    "LocalResponseNormalization",
    "PartialConnectionConv2D",
    "TrainableSubsampling",
]

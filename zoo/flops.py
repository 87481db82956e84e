"""Analytic FLOP counts, as papers report them: the multiply-adds of convolutions and dense
layers, one multiply-add counted as 2 FLOPs. Normalization, activations, pooling and biases are
left out (they are a few percent at most and papers leave them out too).

A custom layer takes part by defining `flops(self) -> int` for one example.
"""

import math

import keras


def _spatial_positions(shape):
    """Output positions per example: the product of the axes between batch and channels."""
    return math.prod(int(d) for d in shape[1:-1])


def layer_flops(layer):
    """FLOPs of one forward pass of `layer` on a single example (batch size 1)."""
    if hasattr(layer, "flops"):
        return int(layer.flops())
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        positions = _spatial_positions(layer.output.shape)
        return 2 * positions * int(layer.output.shape[-1]) * kh * kw
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        in_channels = int(layer.input.shape[-1])
        positions = _spatial_positions(layer.output.shape)
        depthwise = positions * in_channels * layer.depth_multiplier * kh * kw
        pointwise = positions * in_channels * layer.depth_multiplier * layer.filters
        return 2 * (depthwise + pointwise)
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        in_channels = int(layer.input.shape[-1]) // layer.groups
        positions = _spatial_positions(layer.output.shape)
        return 2 * positions * int(layer.output.shape[-1]) * kh * kw * in_channels
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(int(d) for d in layer.input.shape[1:-1])
        return 2 * positions * int(layer.input.shape[-1]) * layer.units
    return 0


def count_flops(model):
    """Total FLOPs of one forward pass of `model` on a single example."""
    return sum(layer_flops(layer) for layer in model.layers)

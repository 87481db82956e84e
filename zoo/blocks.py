"""Reusable building blocks, shared by the families.

Blocks are functions `block(x, ..., options, name) -> y` on symbolic tensors; every layer they
make is named `f"{name}_<part>"`, so layer names are deterministic and weights load by name.
Custom layers use `keras.ops` only, so models save to `.keras` and reload with safe_mode=True.
"""

import keras

from zoo.options import LayerOptions


def conv_norm_act(x, filters, kernel_size, *, options: LayerOptions, name, strides=1,
                  padding="same", use_bias=None, activation=True, groups=1, norm_kwargs=None):
    """Conv2D -> normalization -> activation (`activation=False` skips it, a name overrides it)."""
    x = options.conv(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                     groups=groups, name=f"{name}_conv")(x)
    x = options.apply_norm(x, name=f"{name}_norm", **(norm_kwargs or {}))
    if activation:
        chosen = None if activation is True else activation
        x = options.act(name=f"{name}_act", activation=chosen)(x)
    return x

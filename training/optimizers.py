"""Optimizers by name, with weight decay, gradient clipping and an EMA of the weights.

Keras 3 applies `weight_decay` decoupled from the gradient in every optimizer
(w -= lr * weight_decay * w, as in Loshchilov & Hutter's AdamW), so "adamw" is Adam with that
decay, and SGD + weight_decay is SGDW.
"""

import keras

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")

_CLASSES = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "nadam": keras.optimizers.Nadam,
}


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def build_optimizer(
    name,
    learning_rate,
    *,
    momentum=0.9,
    nesterov=False,
    weight_decay=0.0,
    clip_value=None,
    clip_norm=None,
    global_clip_norm=None,
    ema=False,
    ema_momentum=0.99,
):
    """A Keras optimizer. `learning_rate` is a float or a LearningRateSchedule.

    `momentum` and `nesterov` are SGD's (the other optimizers keep their own moment estimates and
    ignore them). At most one of `clip_value` (each gradient entry to [-v, v]), `clip_norm`
    (each gradient's L2 norm) and `global_clip_norm` (the L2 norm of all gradients together).
    `ema=True` keeps an exponential moving average of the weights, which `fit` copies into the
    model when training ends.
    """
    _require(name in _CLASSES, f"Unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}.")
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        _require(learning_rate > 0, f"learning_rate must be > 0; received {learning_rate}.")
    _require(0 <= momentum < 1, f"momentum must be in [0, 1); received {momentum}.")
    _require(not (nesterov and name == "sgd" and momentum == 0),
             "nesterov=True needs SGD momentum > 0; received momentum=0.")
    _require(not (nesterov and name != "sgd"),
             f"nesterov applies to 'sgd' only (use 'nadam' for Nesterov Adam); received {name!r}.")
    _require(weight_decay >= 0, f"weight_decay must be >= 0; received {weight_decay}.")
    clips = {"clip_value": clip_value, "clip_norm": clip_norm, "global_clip_norm": global_clip_norm}
    chosen = {key: value for key, value in clips.items() if value is not None}
    _require(len(chosen) <= 1,
             f"Choose at most one of clip_value, clip_norm, global_clip_norm; received {chosen}.")
    for key, value in chosen.items():
        _require(value > 0, f"{key} must be > 0; received {value}.")
    _require(0 <= ema_momentum < 1, f"ema_momentum must be in [0, 1); received {ema_momentum}.")

    kwargs = {
        "learning_rate": learning_rate,
        # AdamW requires a float; elsewhere None skips the decay step entirely.
        "weight_decay": float(weight_decay) if weight_decay or name == "adamw" else None,
        "clipvalue": clip_value,
        "clipnorm": clip_norm,
        "global_clipnorm": global_clip_norm,
        "use_ema": ema,
        "ema_momentum": ema_momentum,
    }
    if name == "sgd":
        kwargs.update(momentum=momentum, nesterov=nesterov)
    return _CLASSES[name](**kwargs)

"""Optimizers by name, with weight decay, gradient clipping and an EMA of the weights.

Keras 3 applies `weight_decay` decoupled from the gradient in every optimizer
(w -= lr * weight_decay * w, as in Loshchilov & Hutter's AdamW), so "adamw" is Adam with that
decay, and SGD + weight_decay is SGDW.
"""

import keras

from training import checks

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")

_CLASSES = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "nadam": keras.optimizers.Nadam,
}


# Which optimizers read which setting; the others ignore it. momentum=None takes these defaults.
MOMENTUM_DEFAULTS = {"sgd": 0.9, "rmsprop": 0.0}
RHO_OPTIMIZERS = ("rmsprop",)
EPSILON_OPTIMIZERS = ("adam", "adamw", "nadam", "rmsprop", "adagrad")


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def build_optimizer(
    name,
    learning_rate,
    *,
    momentum=None,
    nesterov=False,
    rho=0.9,
    epsilon=1e-7,
    weight_decay=0.0,
    clip_value=None,
    clip_norm=None,
    global_clip_norm=None,
    ema=False,
    ema_momentum=0.99,
):
    """A Keras optimizer. `learning_rate` is a float or a LearningRateSchedule.

    `momentum` is SGD's and RMSprop's (None: 0.9 for SGD, 0 for RMSprop as in Keras), `nesterov`
    SGD's; `rho` is RMSprop's decay of its squared-gradient average; `epsilon` (added to the
    denominator) is read by Adam, AdamW, Nadam, RMSprop and Adagrad. Each optimizer ignores the
    settings it has no use for. At most one of `clip_value` (each gradient entry to [-v, v]),
    `clip_norm` (each gradient's L2 norm) and `global_clip_norm` (the L2 norm of all gradients together).
    `ema=True` keeps an exponential moving average of the weights, which `fit` copies into the
    model when training ends.
    """
    _require(name in _CLASSES, f"Unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}.")
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        _require(learning_rate > 0, f"learning_rate must be > 0; received {learning_rate}.")
    if momentum is None:
        momentum = MOMENTUM_DEFAULTS.get(name, 0.0)
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
    if name in MOMENTUM_DEFAULTS:
        kwargs["momentum"] = momentum
    if name == "sgd":
        kwargs["nesterov"] = nesterov
    if name in RHO_OPTIMIZERS:
        kwargs["rho"] = rho
    if name in EPSILON_OPTIMIZERS:
        kwargs["epsilon"] = epsilon
    return _CLASSES[name](**kwargs)


def check_config(config):
    """The optimizer section's momentum, rho and epsilon (see training.checks)."""
    opt = config.optimizer
    if opt.momentum is not None:
        checks.require(0 <= opt.momentum < 1,
                       f"momentum must be in [0, 1) (or unset), got {opt.momentum}.")
    checks.require(0 <= opt.rho < 1, f"rho must be in [0, 1), got {opt.rho}.")
    checks.require(opt.epsilon > 0, f"epsilon must be > 0, got {opt.epsilon}.")

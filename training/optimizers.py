"""Optimizers by name, with weight decay, gradient clipping and an EMA of the weights.

Keras 3 applies `weight_decay` decoupled from the gradient in every optimizer
(w -= lr * weight_decay * w, as in Loshchilov & Hutter's AdamW), so "adamw" is Adam with that
decay, and SGD + weight_decay is SGDW.
"""

import keras

from training import checks

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")

EMA_MOMENTUM = 0.99

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
    ema_momentum=EMA_MOMENTUM,
):
    """A Keras optimizer. `learning_rate` is a float or a LearningRateSchedule.

    `momentum` is SGD's and RMSprop's (None: 0.9 for SGD, 0 for RMSprop as in Keras), `nesterov`
    SGD's; `rho` is RMSprop's decay of its squared-gradient average; `epsilon` (added to the
    denominator) is read by Adam, AdamW, Nadam, RMSprop and Adagrad. Each optimizer ignores the
    settings it has no use for. At most one of `clip_value` (each gradient entry to [-v, v]),
    `clip_norm` (each gradient's L2 norm) and `global_clip_norm` (the L2 norm of all gradients
    together). `ema=True` keeps an exponential moving average of the weights, which `fit` copies
    into the model when training ends.
    """
    if momentum is None:
        momentum = MOMENTUM_DEFAULTS.get(name, 0.0)
    check_arguments(
        name,
        learning_rate,
        momentum=momentum,
        nesterov=nesterov,
        rho=rho,
        epsilon=epsilon,
        weight_decay=weight_decay,
        clip_value=clip_value,
        clip_norm=clip_norm,
        global_clip_norm=global_clip_norm,
        ema_momentum=ema_momentum,
    )

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


def check_arguments(
    name,
    learning_rate,
    *,
    momentum,
    nesterov,
    rho,
    epsilon,
    weight_decay,
    clip_value,
    clip_norm,
    global_clip_norm,
    ema_momentum=EMA_MOMENTUM,
    section="",
):
    """The rules of build_optimizer's arguments; `section` ("optimizer.") names them as the
    config does, where the learning rate is `lr`. `momentum` None is the optimizer's default."""
    checks.one_of("optimizer", name, OPTIMIZERS)
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        checks.in_range(
            f"{section}lr" if section else "learning_rate", learning_rate, 0, low_open=True
        )
    if momentum is None:
        momentum = MOMENTUM_DEFAULTS.get(name, 0.0)
    checks.in_range(f"{section}momentum", momentum, 0, 1)
    checks.require(
        not (nesterov and name == "sgd" and momentum == 0),
        f"{section}nesterov needs SGD momentum > 0; got momentum 0.",
    )
    checks.require(
        not (nesterov and name != "sgd"),
        f"{section}nesterov applies to 'sgd' only (use 'nadam' for Nesterov Adam); "
        f"got optimizer {name!r}.",
    )
    checks.in_range(f"{section}rho", rho, 0, 1)
    checks.in_range(f"{section}epsilon", epsilon, 0, low_open=True)
    checks.in_range(f"{section}weight_decay", weight_decay, 0)
    clips = {"clip_value": clip_value, "clip_norm": clip_norm, "global_clip_norm": global_clip_norm}
    chosen = {key: value for key, value in clips.items() if value is not None}
    checks.require(
        len(chosen) <= 1,
        f"Choose at most one of {section}clip_value, clip_norm, global_clip_norm; got {chosen}.",
    )
    for key, value in chosen.items():
        checks.in_range(f"{section}{key}", value, 0, low_open=True)
    checks.in_range(f"{section}ema_momentum", ema_momentum, 0, 1)


def check_config(config):
    opt = config.optimizer
    check_arguments(
        opt.name,
        opt.lr,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        rho=opt.rho,
        epsilon=opt.epsilon,
        weight_decay=opt.weight_decay,
        clip_value=opt.clip_value,
        clip_norm=opt.clip_norm,
        global_clip_norm=opt.global_clip_norm,
        section="optimizer.",
    )
    # The loss's, but set beside the optimizer's knobs.
    checks.in_range("optimizer.label_smoothing", opt.label_smoothing, 0, 1)

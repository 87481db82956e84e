"""Learning-rate schedules: epoch-based formulas evaluated at the optimizer's step.

`build_learning_rate` turns a schedule name and plain numbers into what a Keras optimizer takes:
a float (constant without warmup, and "plateau", whose callback changes a float learning rate)
or a registered, serializable `LearningRateSchedule`, so a saved model.keras reloads with its
optimizer. Every schedule starts at `base_lr`; a linear warmup of `warmup_epochs` can precede any
of them, and the schedule's own clock starts when the warmup ends. `min_lr` is the floor of
every decay (and the end point of cosine and one-cycle).

Cosine is Keras' CosineDecay, which computes the same values (tests/training/test_schedules.py).
Step and exponential stay ours although Keras' ExponentialDecay (staircase or not) gives the same
values without a floor or a warmup: it has neither, and wrapping it in both would take more code
than the one-line formula. Keras' InverseTimeDecay is 1 / (1 + rate * t), not our tau / max(t, tau).
"""

import math

import keras
from keras import ops

from training import checks

SCHEDULES = (
    "constant",
    "step",
    "exponential",
    "inverse_sqrt",
    "inverse_time",
    "cosine",
    "one_cycle",
    "plateau",
)

# One-cycle (Smith & Topin 2017, as in PyTorch's OneCycleLR): start at base_lr / 25, rise to
# base_lr over the first 30% of the run, then anneal to min_lr.
ONE_CYCLE_DIV_FACTOR = 25.0
ONE_CYCLE_PCT_START = 0.3


class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then `decay(t)` floored at min_lr; t counts epochs since the warmup ended."""

    def __init__(self, base_lr, steps_per_epoch, warmup_epochs=0.0, min_lr=0.0):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = float(warmup_epochs)
        self.min_lr = float(min_lr)

    @property
    def warmup_steps(self):
        return round(self.warmup_epochs * self.steps_per_epoch)

    def decay(self, t):
        raise NotImplementedError

    def _floored(self, t):
        return ops.maximum(self.decay(t), self.min_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup_steps = float(self.warmup_steps)
        t = ops.maximum(step - warmup_steps, 0.0) / self.steps_per_epoch
        lr = self._floored(t)
        if warmup_steps:
            # Ramp to the schedule's first value, reached at the first step after the warmup;
            # (step + 1) so that the first step is not wasted at lr 0. The same ramp as Keras'
            # CosineDecay from initial_learning_rate = target / (warmup_steps + 1).
            ramp = self._floored(ops.zeros_like(t)) * (step + 1.0) / (warmup_steps + 1.0)
            lr = ops.where(step < warmup_steps, ramp, lr)
        return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": self.warmup_epochs,
            "min_lr": self.min_lr,
        }


@keras.saving.register_keras_serializable(package="training")
class ConstantSchedule(EpochSchedule):
    """base_lr (exists so that a warmup can precede a constant learning rate)."""

    def decay(self, t):
        return ops.full_like(t, self.base_lr)


@keras.saving.register_keras_serializable(package="training")
class StepDecay(EpochSchedule):
    """base_lr * factor ** floor(t / step_epochs): e.g. 0.01 halved every 10 epochs."""

    def __init__(self, base_lr, steps_per_epoch, step_epochs, step_factor, **kwargs):
        super().__init__(base_lr, steps_per_epoch, **kwargs)
        self.step_epochs = int(step_epochs)
        self.step_factor = float(step_factor)

    def decay(self, t):
        # Exact at boundaries: t is a whole number there, and so is step_epochs.
        drops = ops.floor(t / self.step_epochs)
        return self.base_lr * ops.power(self.step_factor, drops)

    def get_config(self):
        return {
            **super().get_config(),
            "step_epochs": self.step_epochs,
            "step_factor": self.step_factor,
        }


@keras.saving.register_keras_serializable(package="training")
class ExponentialDecay(EpochSchedule):
    """base_lr * decay_rate ** t, continuous in t (exactly base_lr * 0.95^epoch at epoch starts)."""

    def __init__(self, base_lr, steps_per_epoch, decay_rate, **kwargs):
        super().__init__(base_lr, steps_per_epoch, **kwargs)
        self.decay_rate = float(decay_rate)

    def decay(self, t):
        return self.base_lr * ops.power(self.decay_rate, t)

    def get_config(self):
        return {**super().get_config(), "decay_rate": self.decay_rate}


@keras.saving.register_keras_serializable(package="training")
class InverseTimeDecay(EpochSchedule):
    """base_lr * tau / max(t, tau): constant for tau epochs, then proportional to 1/t."""

    def __init__(self, base_lr, steps_per_epoch, tau_epochs, **kwargs):
        super().__init__(base_lr, steps_per_epoch, **kwargs)
        self.tau_epochs = float(tau_epochs)

    def decay(self, t):
        return self.base_lr * self.tau_epochs / ops.maximum(t, self.tau_epochs)

    def get_config(self):
        return {**super().get_config(), "tau_epochs": self.tau_epochs}


@keras.saving.register_keras_serializable(package="training")
class InverseSqrtDecay(InverseTimeDecay):
    """base_lr * sqrt(tau / max(t, tau)): constant for tau epochs, then falls as 1/sqrt(t)."""

    def decay(self, t):
        return self.base_lr * ops.sqrt(self.tau_epochs / ops.maximum(t, self.tau_epochs))


@keras.saving.register_keras_serializable(package="training")
class OneCycle(EpochSchedule):
    """Cosine rise from base_lr / 25 to base_lr over 30% of cycle_epochs, cosine fall to min_lr."""

    def __init__(self, base_lr, steps_per_epoch, cycle_epochs, **kwargs):
        super().__init__(base_lr, steps_per_epoch, **kwargs)
        self.cycle_epochs = float(cycle_epochs)

    def decay(self, t):
        start_lr = self.base_lr / ONE_CYCLE_DIV_FACTOR
        rise_epochs = ONE_CYCLE_PCT_START * self.cycle_epochs
        rise = ops.minimum(t / rise_epochs, 1.0)
        fall = ops.clip((t - rise_epochs) / (self.cycle_epochs - rise_epochs), 0.0, 1.0)
        rising = self.base_lr + (start_lr - self.base_lr) * 0.5 * (1.0 + ops.cos(math.pi * rise))
        falling = self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + ops.cos(math.pi * fall))
        return ops.where(t < rise_epochs, rising, falling)

    def get_config(self):
        return {**super().get_config(), "cycle_epochs": self.cycle_epochs}


def build_learning_rate(
    name,
    *,
    base_lr,
    epochs,
    steps_per_epoch,
    warmup_epochs=0,
    step_epochs=10,
    step_factor=0.5,
    decay_rate=0.95,
    tau_epochs=1.0,
    min_lr=0.0,
):
    """The optimizer's `learning_rate` for schedule `name`: a float or a LearningRateSchedule.

    "plateau" returns the float `base_lr`: the ReduceLROnPlateau callback (training.callbacks,
    `plateau=...`) lowers it, and Keras refuses that callback on an optimizer holding a schedule.
    """
    checks.in_range("steps_per_epoch", steps_per_epoch, 1, integer=True)
    check_arguments(
        name,
        base_lr=base_lr,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        step_epochs=step_epochs,
        step_factor=step_factor,
        decay_rate=decay_rate,
        tau_epochs=tau_epochs,
        min_lr=min_lr,
    )

    if name == "plateau":
        return float(base_lr)
    if name == "constant":
        if not warmup_epochs:
            return float(base_lr)
        return ConstantSchedule(base_lr, steps_per_epoch, warmup_epochs=warmup_epochs)

    common = {
        "base_lr": base_lr,
        "steps_per_epoch": steps_per_epoch,
        "warmup_epochs": warmup_epochs,
        "min_lr": min_lr,
    }
    decay_epochs = epochs - warmup_epochs
    if name == "step":
        return StepDecay(step_epochs=step_epochs, step_factor=step_factor, **common)
    if name == "exponential":
        return ExponentialDecay(decay_rate=decay_rate, **common)
    if name in ("inverse_time", "inverse_sqrt"):
        schedule_class = InverseTimeDecay if name == "inverse_time" else InverseSqrtDecay
        return schedule_class(tau_epochs=tau_epochs, **common)
    if name == "cosine":
        # Keras' own, with the warmup of every schedule here (EpochSchedule's ramp).
        warmup_steps = round(warmup_epochs * steps_per_epoch)
        return keras.optimizers.schedules.CosineDecay(
            base_lr / (warmup_steps + 1) if warmup_steps else base_lr,
            decay_steps=decay_epochs * steps_per_epoch,
            alpha=min_lr / base_lr,
            warmup_target=base_lr if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    return OneCycle(cycle_epochs=decay_epochs, **common)


def check_arguments(
    name,
    *,
    base_lr,
    epochs,
    warmup_epochs,
    step_epochs,
    step_factor,
    decay_rate,
    tau_epochs,
    min_lr,
    section="",
):
    """The rules of build_learning_rate's arguments, all of them whichever schedule is chosen;
    `section` ("schedule.") names them as the config does, where base_lr is optimizer.lr."""
    checks.one_of("schedule", name, SCHEDULES)
    base_lr_name = "optimizer.lr" if section else "base_lr"
    checks.in_range(base_lr_name, base_lr, 0, low_open=True)
    checks.in_range("epochs", epochs, 1, integer=True)
    checks.in_range(f"{section}warmup_epochs", warmup_epochs, 0, epochs)
    checks.in_range(f"{section}min_lr", min_lr, 0, base_lr)
    checks.in_range(f"{section}step_epochs", step_epochs, 1, integer=True)
    checks.in_range(f"{section}step_factor", step_factor, 0, 1, low_open=True)
    checks.in_range(f"{section}decay_rate", decay_rate, 0, 1, low_open=True)
    checks.in_range(f"{section}tau_epochs", tau_epochs, 0, low_open=True)
    checks.require(
        name != "plateau" or not warmup_epochs,
        "The plateau schedule changes a constant learning rate from a callback, and Keras "
        "refuses that callback when a warmup schedule drives the optimizer; got "
        f"{section}warmup_epochs {warmup_epochs}. Use warmup_epochs 0 with plateau, or a "
        "schedule with a warmup (e.g. cosine).",
    )


def check_config(config):
    schedule = config.schedule
    check_arguments(
        schedule.name,
        base_lr=config.optimizer.lr,
        epochs=config.epochs,
        warmup_epochs=schedule.warmup_epochs,
        step_epochs=schedule.step_epochs,
        step_factor=schedule.step_factor,
        decay_rate=schedule.decay_rate,
        tau_epochs=schedule.tau_epochs,
        min_lr=schedule.min_lr,
        section="schedule.",
    )

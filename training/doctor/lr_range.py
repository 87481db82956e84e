"""The `lr_range` check: a learning-rate range test (Smith 2017, "Cyclical learning rates";
the fastai lr_find recipe): raise the learning rate exponentially while training and watch
where the loss falls fastest and where it blows up."""

import math

import keras
import numpy as np

from training.doctor import figures
from training.doctor.report import Result

START_LR, END_LR = 1e-7, 10.0
# An exponential average over ~10 steps (a third of a decade at the default 200 steps over
# 8 decades): per-step losses are too noisy to differentiate, heavier smoothing lags the
# minimum towards higher rates.
SMOOTHING = 0.9
# The test stops once the smoothed loss is 4x its best: past that it only diverges further.
DIVERGED = 4.0
# The suggestion stays one decade below the loss minimum (the classic "min / 10"), where
# training is still stable over a long run; a configured rate 10x below that is needlessly
# slow. (The steepest descent is reported and drawn too; it often lies between the two.)
SAFETY = 10.0


def smooth(losses, beta=SMOOTHING):
    """Bias-corrected exponential moving average."""
    average, smoothed = 0.0, []
    for step, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta**step))
    return np.array(smoothed)


def check_lr_range(exam):
    steps = exam.budget.lr_range_steps
    growth = keras.optimizers.schedules.ExponentialDecay(
        START_LR, decay_steps=steps, decay_rate=END_LR / START_LR
    )
    model = exam.copy(learning_rate=growth)
    rates, losses = [], []
    best = math.inf
    for step, (images, labels, *_) in enumerate(exam.augmented.repeat().take(steps)):
        rates.append(START_LR * (END_LR / START_LR) ** (step / steps))
        losses.append(float(model.train_on_batch(images, labels, return_dict=True)["loss"]))
        current = smooth(losses)[-1]
        if not math.isfinite(current) or current > DIVERGED * best:
            break
        best = min(best, current)
    return lr_range_results(exam, np.array(rates), np.array(losses))


def suggest(rates, losses):
    """(steepest, at_minimum, safe) learning rates from a range test's per-step losses."""
    smoothed = smooth(losses)
    lowest = int(np.nanargmin(np.where(np.isfinite(smoothed), smoothed, np.nan)))
    log_rates = np.log10(rates)
    # Slopes between points a quarter decade apart, after the average's warm-up: neighbouring
    # steps differ by noise more than by the learning rate.
    per_decade = (len(rates) - 1) / max(log_rates[-1] - log_rates[0], 1e-12)
    span = max(1, round(per_decade / 4))
    centers = np.arange(max(span, round(1 / (1 - SMOOTHING))), lowest - span + 1)
    if len(centers):
        slopes = (smoothed[centers + span] - smoothed[centers - span]) / (
            log_rates[centers + span] - log_rates[centers - span]
        )
        steepest = float(rates[centers[int(np.argmin(slopes))]])
    else:  # the loss never fell: its minimum is at the start
        steepest = float(rates[lowest])
    at_minimum = float(rates[lowest])
    return steepest, at_minimum, at_minimum / SAFETY


def lr_range_results(exam, rates, losses):
    steepest, at_minimum, safe = suggest(rates, losses)
    configured = exam.configured_learning_rate(exam.budget.learn_steps)
    exam.findings.update(
        suggested_lr=float(f"{safe:.2g}"),
        steepest_lr=steepest,
        lr_at_minimum_loss=at_minimum,
        configured_lr=configured,
    )
    exam.report.images["lr_range.png"] = figures.lr_range_plot(
        rates,
        losses,
        smooth(losses),
        steepest=steepest,
        at_minimum=at_minimum,
        safe=safe,
        configured=configured,
        title=f"learning-rate range test, {len(losses)} steps",
    )
    measured = (
        f"loss lowest at {at_minimum:.2g}, steepest at {steepest:.2g}; configured {configured:.2g}"
    )
    expected = f"configured {safe / SAFETY:.2g}..{at_minimum:.2g} (suggest {safe:.2g})"
    if configured > at_minimum:
        verdict, advice = (
            "fail",
            (
                f"the configured rate is past the loss minimum of the range "
                f"test, where training turns unstable: use {safe:.2g}"
            ),
        )
    elif configured < safe / SAFETY:
        verdict, advice = "warn", f"the configured rate is needlessly low: try {safe:.2g}"
    else:
        verdict, advice = "pass", ""
    return [Result("lr_range", "learning rate", measured, expected, verdict, advice)]

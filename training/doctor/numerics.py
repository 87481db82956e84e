"""The `numerics` check: NaN or Inf in the loss, the weights or the gradients of the short
training run, and, under mixed_float16, what the loss scale did."""

import math

import keras
import numpy as np

from training.doctor.report import Result

# Keras' LossScaleOptimizer starts at 2**15 and halves the scale at every overflow; below 1
# it has halved 15+ times more often than it grew: the float16 gradients overflow steadily.
MIN_LOSS_SCALE = 1.0


def check_numerics(exam):
    run = exam.training_run(exam.budget.learn_steps)
    results = []
    measured = f"{run.steps} steps, loss {min(run.losses):.3g}..{max(run.losses):.3g}"
    if run.first_nonfinite is not None:
        results.append(
            Result(
                "numerics",
                "loss",
                measured,
                "finite at every step",
                "fail",
                f"the loss became NaN/Inf at step {run.first_nonfinite}: lower the "
                f"learning rate (see lr_range) or clip gradients",
            )
        )
    else:
        results.append(Result("numerics", "loss", measured, "finite at every step", "pass"))

    bad_weights = [
        v.path for v in run.model.weights if not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))
    ]
    images, labels = exam.batches(exam.train, 1)
    gradients = exam.gradients(run.model, images, labels)
    bad_gradients = [name for name, rms in gradients.items() if not math.isfinite(rms)]
    measured = f"{len(bad_weights)} weights, {len(bad_gradients)} layer gradients non-finite"
    if bad_weights or bad_gradients:
        results.append(
            Result(
                "numerics",
                "weights and gradients",
                measured,
                "all finite",
                "fail",
                f"non-finite values in {(bad_weights + bad_gradients)[0]}"
                f": lower the learning rate, check inputs for NaN",
            )
        )
    else:
        results.append(Result("numerics", "weights and gradients", measured, "all finite", "pass"))

    optimizer = run.model.optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        scale = float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))
        measured = f"{scale:g} after {run.steps} steps (started {optimizer.initial_scale:g})"
        expected = f">= {MIN_LOSS_SCALE:g}"
        if scale < MIN_LOSS_SCALE:
            results.append(
                Result(
                    "numerics",
                    "loss scale",
                    measured,
                    expected,
                    "warn",
                    "float16 gradients overflow again and again: lower the "
                    "learning rate or train in float32/bfloat16",
                )
            )
        else:
            results.append(Result("numerics", "loss scale", measured, expected, "pass"))
    return results

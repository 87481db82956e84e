"""`examine(model, train_data, ...)`: run the doctor's checks on any Keras classifier."""

import logging
import time

from training import checks
from training.doctor.activations import check_activations_gradients
from training.doctor.data_check import check_data
from training.doctor.lr_range import check_lr_range
from training.doctor.numerics import check_numerics
from training.doctor.session import Budget, Examination, as_batches
from training.doctor.training_checks import (
    check_initial_loss,
    check_learns,
    check_overfit_small,
)

log = logging.getLogger("training.doctor")

# The checks, in the order they run (the recipe's order: data first, long runs last).
CHECKS = {
    "data": check_data,
    "initial_loss": check_initial_loss,
    "overfit_small": check_overfit_small,
    "learns": check_learns,
    "lr_range": check_lr_range,
    "activations_gradients": check_activations_gradients,
    "numerics": check_numerics,
}


def check_names(names):
    """`names` (or all checks when empty) in run order; an unknown name is a ConfigError."""
    for name in names:
        checks.one_of("doctor check", name, CHECKS)
    return [name for name in CHECKS if name in names or not names]


def examine(
    model,
    train_data,
    validation_data=None,
    *,
    checks=tuple(CHECKS),
    test_data=None,
    augmented_data=None,
    loss=None,
    optimizer=None,
    batch_size=32,
    class_names=None,
    budget=None,
    seed=0,
    output_dir=None,
):
    """Examine a Keras classifier and its data before a long training run.

    `model`: a built Functional or Sequential model with one output of K class scores,
    compiled or not; it is never changed (every check works on a copy of it). `train_data`,
    `validation_data`, `test_data`: tf.data.Datasets of (images, labels), batched or not, or
    (x, y) arrays; labels as class indices or one-hot rows. `augmented_data`: the training data
    as augmented for training (default `train_data`), used where the checks train for real;
    `train_data` itself should be unaugmented. `loss` and `optimizer` default to the model's
    compiled ones, else cross-entropy on probabilities and Adam(1e-3). `budget`: a `Budget`
    (steps and batches each check may use). Returns a `Report`;
    with `output_dir` also writes it there (report.json and the images).
    """
    names = check_names(list(checks))
    exam = Examination(
        model,
        as_batches(train_data, batch_size, shuffle=True, seed=seed),
        as_batches(validation_data, batch_size, shuffle=False, seed=seed),
        as_batches(test_data, batch_size, shuffle=False, seed=seed),
        as_batches(augmented_data, batch_size, shuffle=True, seed=seed),
        loss=loss,
        optimizer=optimizer,
        budget=budget or Budget(),
        class_names=class_names,
    )
    for name in names:
        log.info("doctor: %s ...", name)
        started = time.perf_counter()
        exam.report.results.extend(CHECKS[name](exam))
        exam.report.seconds[name] = round(time.perf_counter() - started, 1)
        log.info(
            "doctor: %s %s (%.1f s)",
            name,
            exam.report.checks[name].upper(),
            exam.report.seconds[name],
        )
    if output_dir is not None:
        exam.report.save(output_dir)
    return exam.report

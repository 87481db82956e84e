"""The checks that look at the loss: `initial_loss`, `overfit_small` and `learns`."""

import math

import numpy as np

from training.doctor.report import Result
from training.doctor.session import labels_to_classes

# At init the loss should be ln K: a softmax over logits of spread s (their std across classes)
# costs on average more, growing with s. Glorot or He heads over unit-scale features give
# s ~ 1.4, so up to s = 2 is a healthy start (at K = 10: ln K + 1.5); up to s = 4 the head is
# overconfident and spends its first steps shrinking its logits; beyond, it is confidently
# wrong about almost every image: the initialization or the head is broken.
HEALTHY_SPREAD = 2.0
TOLERATED_SPREAD = 4.0
# An input-dependent random network spreads its predictions over the classes; when 95% of
# the images get the same class the inputs barely reach the output.
MAX_ONE_CLASS_SHARE = 0.95
# Outputs count as probabilities when they lie in [0, 1] and each row sums to 1 (float16
# softmax rounding stays well within 1e-2).
SUM_TOLERANCE = 1e-2
# "Clearly above chance". A network that learned nothing real (shuffled labels) still answers
# alike for alike images, so its luck acts per class, not per image: with chance accuracy p
# and K classes as the independent draws, luck has a standard deviation of sqrt(p(1-p)/K)
# (measured: shuffled digit labels reach 18% where chance is 10%). Below 4 of those above
# chance (1 in 30,000) the run fails; to pass it must remove half of chance's errors.
SIGMAS = 4.0
SHARE_OF_ERRORS_REMOVED = 0.5


def check_initial_loss(exam):
    model = exam.copy(compiled=False)
    losses, outputs = [], []
    # Training mode, as the first step sees the model (batch statistics in BatchNorm).
    for images, labels, *_ in exam.train.take(exam.budget.loss_batches):
        predicted = model(images, training=True)
        losses.append(float(exam.mean_loss(labels, predicted)))
        outputs.append(np.asarray(predicted, np.float64))
    outputs = np.concatenate(outputs)
    return [
        _loss_result(float(np.mean(losses)), exam.num_classes),
        _outputs_result(exam, outputs),
        _spread_result(outputs, exam.class_names),
    ]


def excess_loss(num_classes, spread, samples=20_000):
    """The mean cross-entropy above ln K of a softmax over K Gaussian logits of std `spread`
    (a seeded Monte Carlo estimate: no closed form)."""
    logits = np.random.default_rng(0).normal(0.0, spread, (samples, num_classes))
    top = logits.max(axis=1)
    log_sum = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return float(np.mean(log_sum - logits[:, 0]) - math.log(num_classes))


def _loss_result(loss, num_classes):
    chance = math.log(num_classes)
    healthy = excess_loss(num_classes, HEALTHY_SPREAD)
    measured = f"{loss:.3f}"
    expected = f"ln {num_classes} = {chance:.2f}, at most {chance + healthy:.2f}"
    excess = loss - chance
    if not math.isfinite(loss) or excess > excess_loss(num_classes, TOLERATED_SPREAD):
        return Result(
            "initial_loss",
            "loss at init",
            measured,
            expected,
            "fail",
            "far above chance before any training: check the initializer scale, "
            "the head (logits vs probabilities) and the labels",
        )
    if excess > healthy:
        return Result(
            "initial_loss",
            "loss at init",
            measured,
            expected,
            "warn",
            "overconfident at init: scale down the last layer's initialization",
        )
    return Result("initial_loss", "loss at init", measured, expected, "pass")


def _outputs_result(exam, outputs):
    sums = outputs.sum(axis=1)
    probabilities = bool(
        np.all(outputs >= 0) and np.all(outputs <= 1) and np.all(np.abs(sums - 1) <= SUM_TOLERANCE)
    )
    measured = (
        f"{'probabilities' if probabilities else 'not probabilities'} (values "
        f"{outputs.min():.2g}..{outputs.max():.2g}, rows sum {sums.min():.3g}.."
        f"{sums.max():.3g})"
    )
    expected = "logits (from_logits=True)" if exam.loss_takes_logits else "probabilities"
    if exam.loss_takes_logits and probabilities:
        return Result(
            "initial_loss",
            "head vs loss",
            measured,
            expected,
            "warn",
            "the head already applies softmax and the loss applies it again: "
            "use from_logits=False or a linear head",
        )
    if not exam.loss_takes_logits and not probabilities:
        return Result(
            "initial_loss",
            "head vs loss",
            measured,
            expected,
            "fail",
            "the head outputs logits but the loss expects probabilities: pass "
            "from_logits=True to the loss, or end the model with a softmax",
        )
    return Result("initial_loss", "head vs loss", measured, expected, "pass")


def _spread_result(outputs, class_names):
    predicted = outputs.argmax(axis=1)
    commonest = np.bincount(predicted, minlength=len(class_names)).argmax()
    share = float(np.mean(predicted == commonest))
    constant = bool(np.all(outputs.std(axis=0) == 0))
    measured = f"{share:.0%} predicted {class_names[commonest]}" + (
        ", the same output for every image" if constant else ""
    )
    expected = f"no class above {MAX_ONE_CLASS_SHARE:.0%}"
    if constant or share > MAX_ONE_CLASS_SHARE:
        return Result(
            "initial_loss",
            "predictions at init",
            measured,
            expected,
            "fail",
            "the output ignores the input: all-zero or tiny weights (check the "
            "kernel initializer), or a dead layer",
        )
    return Result("initial_loss", "predictions at init", measured, expected, "pass")


def check_overfit_small(exam):
    """Memorize one clean batch with dropout and weight penalties off."""
    model = exam.copy(regularized=False)
    images, labels = exam.batches(exam.train, 1)
    best, reached = 0.0, None
    for step in range(1, exam.budget.overfit_steps + 1):
        accuracy = float(model.train_on_batch(images, labels, return_dict=True)["accuracy"])
        best = max(best, accuracy)
        if accuracy >= 1.0:
            reached = step
            break
    expected = f"100% within {exam.budget.overfit_steps} steps"
    exam.findings["overfit_small_reached"] = reached
    if reached is not None:
        return [
            Result(
                "overfit_small",
                "memorize one batch",
                f"{len(images)} images: 100% after {reached} steps",
                expected,
                "pass",
            )
        ]
    return [
        Result(
            "overfit_small",
            "memorize one batch",
            f"{len(images)} images: best {best:.0%} in {exam.budget.overfit_steps} steps",
            expected,
            "fail",
            "cannot memorize a single batch: check that the labels belong to the images, "
            "the loss matches the head, and the learning rate (lr_range)",
        )
    ]


def check_learns(exam):
    if exam.validation is None:
        return [
            Result(
                "learns",
                "validation accuracy",
                "no validation data given",
                "clearly above chance",
                "warn",
                "pass validation_data to run this check",
            )
        ]
    run = exam.training_run(exam.budget.learn_steps)
    hits = total = 0
    counts = np.zeros(exam.num_classes, np.int64)
    for images, labels in exam.examples(exam.validation, exam.budget.eval_examples):
        classes = labels_to_classes(labels)
        predicted = np.asarray(run.model(images, training=False)).argmax(axis=1)
        hits += int(np.sum(predicted == classes))
        total += len(classes)
        counts += np.bincount(np.clip(classes, 0, exam.num_classes - 1), minlength=exam.num_classes)
    accuracy = hits / total
    # Chance: always answering the most common validation class.
    chance = counts.max() / total
    halfway = chance + SHARE_OF_ERRORS_REMOVED * (1 - chance)
    luck = math.sqrt(chance * (1 - chance) / min(total, exam.num_classes))
    significant = min(chance + SIGMAS * luck, halfway)
    measured = f"{accuracy:.1%} on {total} images after {run.steps} steps"
    expected = f">= {halfway:.0%} (chance {chance:.0%})"

    def result(verdict, advice=""):
        return [Result("learns", "validation accuracy", measured, expected, verdict, advice)]

    if run.first_nonfinite is not None:
        return result(
            "fail",
            f"the loss became NaN/Inf at step {run.first_nonfinite}: lower the "
            f"learning rate (see lr_range)",
        )
    if accuracy >= halfway:
        return result("pass")
    if accuracy >= significant:
        return result(
            "warn",
            "learning, but slowly: try the learning rate lr_range suggests, or "
            "check augmentation strength",
        )
    memorized = exam.findings.get("overfit_small_reached") is not None
    return result(
        "fail",
        "the small sample was memorized but validation stays at chance: suspect the "
        "labels (shuffled, or not matching the images)"
        if memorized
        else "validation stays at chance: check the labels, the learning rate "
        "(lr_range) and the model",
    )

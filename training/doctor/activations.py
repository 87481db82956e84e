"""The `activations_gradients` check: per layer, what the activations and gradients look like
at initialization and after a few training steps (Glorot & Bengio 2010; He et al. 2015)."""

import keras
import numpy as np

from training.doctor import figures
from training.doctor.report import Result
from training.doctor.session import flat_layers, layer_inputs_and_outputs

# Layers whose outputs are activations; Dense/Conv layers count when they carry one.
ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)
RELU_NAMES = ("relu", "relu6")
# Gradient RMS of the first weighted layer over the last one. Healthy networks keep it within
# about a decade either way; two decades is suspect, three (the "orders of magnitude" of the
# vanishing/exploding-gradient literature) leave the early layers effectively frozen (or
# the late ones swamped).
WARN_DECADES = 2
FAIL_DECADES = 3
# Half a layer's units never firing on a whole batch wastes half its capacity.
MAX_DEAD_SHARE = 0.5


def _activation_name(layer):
    function = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.ReLU):
        return "relu"
    if function is None:
        return None
    return getattr(function, "__name__", type(function).__name__)


def activation_layers(model):
    """The layers that output hidden activations (not the softmax/linear output)."""
    chosen = []
    for layer in flat_layers(model):
        name = _activation_name(layer)
        if (
            name
            and name not in ("linear", "softmax", "log_softmax")
            and (isinstance(layer, ACTIVATION_LAYERS) or hasattr(layer, "kernel"))
        ):
            chosen.append(layer)
    return chosen


def _measure(exam, weights, images, labels):
    model = exam.copy(weights, compiled=False)
    chosen = activation_layers(model)
    outputs = layer_inputs_and_outputs(model, images, set(chosen))
    activations = {layer.name: outputs[layer][1].astype(np.float64) for layer in chosen}
    dead = {
        layer.name: _dead_share(outputs[layer][1])
        for layer in chosen
        if _activation_name(layer) in RELU_NAMES
    }
    return activations, dead, exam.gradients(model, images, labels)


def _dead_share(values):
    """The share of units (channels) that output 0 for every image and position."""
    values = np.asarray(values).reshape(-1, np.asarray(values).shape[-1])
    return float(np.mean(np.all(values <= 0, axis=0)))


def check_activations_gradients(exam):
    images, labels = exam.batches(exam.train, 1)
    steps = exam.budget.probe_steps
    init = _measure(exam, None, images, labels)
    run = exam.training_run(steps)
    trained = (
        _measure(exam, run.snapshot, images, labels) if run.snapshot is not None else ({}, {}, {})
    )
    exam.report.images["activations.png"] = figures.activations_plot(
        {name: values.ravel() for name, values in init[0].items()},
        {name: values.ravel() for name, values in trained[0].items()},
        init[2],
        trained[2],
        steps=steps,
        title="activations per layer and gradients",
    )
    return [
        _spread_result(init[0], trained[0], steps),
        _dead_result(init[1], trained[1], steps),
        _flow_result(init[2], trained[2], steps),
    ]


def _spread_result(init, trained, steps):
    expected = "every layer's output varies"
    if not init:
        return Result(
            "activations_gradients", "activations", "no activation layers found", expected, "pass"
        )
    moments = {
        when: {
            name: (float(np.nanmean(values)), float(np.nanstd(values)))
            for name, values in found.items()
        }
        for when, found in (("init", init), (f"after {steps} steps", trained))
        if found
    }
    measured = (
        "; ".join(
            f"std {min(s for _, s in m.values()):.2g}..{max(s for _, s in m.values()):.2g}, "
            f"|mean| <= {max(abs(a) for a, _ in m.values()):.2g} {when}"
            for when, m in moments.items()
        )
        + f" ({len(init)} layers)"
    )
    stds = {name: std for name, (_, std) in moments["init"].items()}
    constant = [name for name, std in stds.items() if std == 0]
    if constant:
        return Result(
            "activations_gradients",
            "activations",
            measured,
            expected,
            "fail",
            f"{', '.join(constant[:3])} output a constant at init: all-zero weights "
            f"(check the kernel initializer) or a dead input",
        )
    return Result("activations_gradients", "activations", measured, expected, "pass")


def _dead_result(init, trained, steps):
    expected = f"dead ReLU units <= {MAX_DEAD_SHARE:.0%} per layer"
    if not init:
        return Result("activations_gradients", "dead ReLUs", "no ReLU layers", expected, "pass")
    worst_layer = max(init, key=init.get)
    later = max(trained.values(), default=0.0)
    measured = (
        f"at most {max(init.values()):.0%} ({worst_layer}) at init, {later:.0%} after {steps} steps"
    )
    share = max(max(init.values()), later)
    if share >= 1.0:
        return Result(
            "activations_gradients",
            "dead ReLUs",
            measured,
            expected,
            "fail",
            "a whole ReLU layer is dead: zero weights, a bad bias, or a learning "
            "rate so high it knocked every unit out",
        )
    if share > MAX_DEAD_SHARE:
        return Result(
            "activations_gradients",
            "dead ReLUs",
            measured,
            expected,
            "warn",
            "many ReLU units never fire: lower the learning rate, use He init or a leaky ReLU",
        )
    return Result("activations_gradients", "dead ReLUs", measured, expected, "pass")


def _ratio(gradients):
    values = list(gradients.values())
    return (
        values[0] / values[-1]
        if values and values[-1] > 0
        else (np.inf if values and values[0] > 0 else 0.0)
    )


def _flow_result(init, trained, steps):
    ratios = {"init": _ratio(init)}
    if trained:
        ratios[f"after {steps} steps"] = _ratio(trained)
    first, last = next(iter(init)), list(init)[-1]
    measured = f"RMS gradient {first} / {last}: " + ", ".join(
        f"{ratio:.2g} {when}" for when, ratio in ratios.items()
    )
    expected = f"within 1e-{WARN_DECADES}..1e{WARN_DECADES}"
    decades = max(
        abs(np.log10(ratio)) if 0 < ratio < np.inf else np.inf for ratio in ratios.values()
    )
    vanishing = min(ratios.values()) < 1
    kind = "vanishing" if vanishing else "exploding"
    healthy_at_init = 0 < ratios["init"] < np.inf and abs(np.log10(ratios["init"])) <= WARN_DECADES
    if healthy_at_init:
        advice = (
            f"{kind} gradients after {steps} steps though healthy at init: training "
            f"saturated or killed the early layers; lower the learning rate (lr_range)"
        )
    else:
        advice = (
            f"{kind} gradients: the early layers get "
            f"{'far less' if vanishing else 'far more'} gradient than the last; use "
            f"ReLU-family activations with He init, add normalization (BatchNorm) or "
            f"residual connections"
        )
    if not np.isfinite(decades) or decades > FAIL_DECADES:
        return Result("activations_gradients", "gradient flow", measured, expected, "fail", advice)
    if decades > WARN_DECADES:
        return Result("activations_gradients", "gradient flow", measured, expected, "warn", advice)
    return Result("activations_gradients", "gradient flow", measured, expected, "pass")

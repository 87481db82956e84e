import math

import keras
import numpy as np
import pytest

from training.schedules import SCHEDULES, build_learning_rate

BASE_LR = 0.01
STEPS = 10  # steps per epoch


def lr_at(schedule, epoch):
    """The schedule's value at the step that starts (fractional) epoch `epoch`."""
    return float(schedule(round(epoch * STEPS)))


def build(name, epochs=30, **kwargs):
    return build_learning_rate(
        name, base_lr=BASE_LR, epochs=epochs, steps_per_epoch=STEPS, **kwargs
    )


def test_step_halves_every_ten_epochs():
    schedule = build("step", step_epochs=10, step_factor=0.5)
    assert [lr_at(schedule, e) for e in (0, 9, 9.9, 10, 19.9, 20, 29.9)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025], rel=1e-6
    )


def test_exponential_is_lr0_times_rate_to_the_epoch():
    schedule = build("exponential", decay_rate=0.95)
    for epoch in (0, 1, 2, 10, 25, 0.5):
        assert lr_at(schedule, epoch) == pytest.approx(0.01 * 0.95**epoch, rel=1e-5)


def test_inverse_time_is_lr0_tau_over_max_t_tau():
    schedule = build("inverse_time", tau_epochs=2.0)
    assert [lr_at(schedule, e) for e in (0, 1, 2, 4, 8, 20)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.005, 0.0025, 0.001], rel=1e-6
    )


def test_inverse_sqrt_is_lr0_sqrt_tau_over_max_t_tau():
    schedule = build("inverse_sqrt", tau_epochs=1.0)
    assert [lr_at(schedule, e) for e in (0, 0.5, 1, 4, 16, 25)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.005, 0.0025, 0.002], rel=1e-6
    )


def test_cosine_goes_from_lr0_to_min_lr():
    schedule = build("cosine", epochs=10, min_lr=0.001)
    assert [lr_at(schedule, e) for e in (0, 5, 10, 12)] == pytest.approx(
        [0.01, 0.0055, 0.001, 0.001], rel=1e-6
    )
    assert lr_at(schedule, 2.5) == pytest.approx(
        0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-6
    )


def test_one_cycle_rises_from_a_25th_to_lr0_then_falls_to_min_lr():
    schedule = build("one_cycle", epochs=10)
    values = [lr_at(schedule, e) for e in (0, 1.5, 3, 6.5, 10)]
    assert values == pytest.approx(
        [0.01 / 25, (0.01 + 0.01 / 25) / 2, 0.01, 0.005, 0.0], rel=1e-5, abs=1e-9
    )


def test_constant_and_plateau_are_floats_for_the_optimizer():
    assert build("constant") == 0.01
    assert build("plateau") == 0.01
    assert isinstance(build("constant"), float) and isinstance(build("plateau"), float)


def test_min_lr_floors_every_decay():
    schedule = build("step", step_epochs=10, step_factor=0.5, min_lr=0.003)
    assert [lr_at(schedule, e) for e in (0, 10, 20, 29)] == pytest.approx(
        [0.01, 0.005, 0.003, 0.003], rel=1e-6
    )


@pytest.mark.parametrize(
    "name", ["constant", "step", "exponential", "inverse_sqrt", "inverse_time", "cosine"]
)
def test_warmup_ramps_linearly_then_hands_over(name):
    warmup = build(name, epochs=12, warmup_epochs=2)
    plain = build(name, epochs=10) if name != "constant" else None
    # 20 warmup steps: (step + 1) / 21 of the rate, the full rate at the first step after them.
    ramp = [float(warmup(step)) for step in (0, 1, 9, 19)]
    assert ramp == pytest.approx([0.01 / 21, 0.02 / 21, 0.1 / 21, 0.2 / 21], rel=1e-6)
    # After the warmup the schedule runs on its own clock, started when the warmup ended.
    for step in (20, 25, 50, 70, 119):
        expected = 0.01 if plain is None else float(plain(step - 20))
        assert float(warmup(step)) == pytest.approx(expected, rel=1e-6)


def test_warmup_ramps_to_the_first_value_of_one_cycle():
    schedule = build("one_cycle", epochs=11, warmup_epochs=1)
    # float32 cosines: a few ulps off.
    assert float(schedule(4)) == pytest.approx(0.01 / 25 * 5 / 11, rel=1e-5)
    assert float(schedule(10)) == pytest.approx(0.01 / 25, rel=1e-5)
    assert float(schedule(40)) == pytest.approx(0.01, rel=1e-5)  # peak 3 epochs after warmup


def test_plateau_with_warmup_is_refused_with_the_alternatives():
    with pytest.raises(ValueError, match="Use warmup_epochs 0 with plateau"):
        build("plateau", warmup_epochs=2)


@pytest.mark.parametrize(
    "name",
    ["constant", "step", "exponential", "inverse_sqrt", "inverse_time", "cosine", "one_cycle"],
)
def test_schedules_serialize_and_give_the_same_values(name):
    schedule = build(name, warmup_epochs=1, min_lr=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    steps = [0, 5, 10, 57, 133, 299, 400]
    assert [float(restored(s)) for s in steps] == [float(schedule(s)) for s in steps]


def test_model_keras_reloads_with_its_optimizer_schedule(tmp_path):
    schedule = build("cosine", epochs=4, warmup_epochs=1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(keras.optimizers.SGD(schedule), loss="mse")
    x, y = np.ones((20, 3), "float32"), np.zeros((20, 2), "float32")
    model.fit(x, y, batch_size=2, epochs=2, verbose=0)  # 20 steps: past the warmup
    model.save(tmp_path / "model.keras")

    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert int(reloaded.optimizer.iterations) == 20
    assert type(reloaded.optimizer._learning_rate).__name__ == "CosineDecay"
    assert float(reloaded.optimizer.learning_rate) == pytest.approx(float(schedule(20)), rel=1e-6)
    assert float(schedule(20)) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi / 3)))


def test_every_listed_name_builds():
    for name in SCHEDULES:
        lr = build(name)
        assert isinstance(lr, (float, keras.optimizers.schedules.LearningRateSchedule))


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("linear", {}, "Unknown schedule 'linear'. Valid: constant, step, exponential"),
        ("step", {"base_lr": 0.0}, "base_lr must be > 0, got 0.0"),
        ("step", {"base_lr": -0.1}, "base_lr must be > 0"),
        ("cosine", {"warmup_epochs": -1}, "warmup_epochs must be in \\[0, 30\\), got -1"),
        ("cosine", {"warmup_epochs": 30}, "warmup_epochs must be in \\[0, 30\\), got 30"),
        ("step", {"step_factor": 0.0}, "step_factor must be in \\(0, 1\\), got 0.0"),
        ("step", {"step_factor": 2.0}, "step_factor must be in \\(0, 1\\)"),
        ("step", {"step_epochs": 0}, "step_epochs must be an integer >= 1"),
        ("step", {"step_epochs": 2.5}, "step_epochs must be an integer >= 1"),
        ("exponential", {"decay_rate": 1.0}, "decay_rate must be in \\(0, 1\\)"),
        ("inverse_time", {"tau_epochs": 0}, "tau_epochs must be > 0"),
        ("cosine", {"min_lr": 0.02}, "min_lr must be in \\[0, 0.01\\), got 0.02"),
        ("cosine", {"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ("cosine", {"steps_per_epoch": 0}, "steps_per_epoch must be an integer >= 1"),
    ],
)
def test_bad_names_and_values_say_what_is_allowed(name, kwargs, message):
    arguments = {"base_lr": BASE_LR, "epochs": 30, "steps_per_epoch": STEPS, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_learning_rate(name, **arguments)


def cosine_formula(step, *, epochs, warmup_epochs, min_lr):
    """The cosine schedule as the docs state it, in plain Python: a linear warmup that reaches
    base_lr at the first step after it, then half a cosine from base_lr to min_lr."""
    warmup_steps = round(warmup_epochs * STEPS)
    if step < warmup_steps:
        return BASE_LR * (step + 1) / (warmup_steps + 1)
    progress = min((step - warmup_steps) / ((epochs - warmup_epochs) * STEPS), 1.0)
    return min_lr + (BASE_LR - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize(
    "epochs, warmup_epochs, min_lr", [(10, 0, 0.0), (12, 2, 1e-3), (7, 0.5, 0.0), (3, 1, 1e-4)]
)
def test_cosine_matches_its_formula_at_every_step(epochs, warmup_epochs, min_lr):
    schedule = build("cosine", epochs=epochs, warmup_epochs=warmup_epochs, min_lr=min_lr)
    steps = range(0, (epochs + 2) * STEPS)
    assert [float(schedule(step)) for step in steps] == pytest.approx(
        [
            cosine_formula(step, epochs=epochs, warmup_epochs=warmup_epochs, min_lr=min_lr)
            for step in steps
        ],
        rel=1e-5,
        abs=1e-9,
    )


def test_step_and_exponential_agree_with_keras_exponential_decay_without_floor_or_warmup():
    """Where Keras' ExponentialDecay covers ours (no min_lr floor, no warmup) the values agree;
    ours stays for the floor and the warmup every schedule here has (see training.schedules)."""
    keras_step = keras.optimizers.schedules.ExponentialDecay(
        BASE_LR, 10 * STEPS, 0.5, staircase=True
    )
    keras_exponential = keras.optimizers.schedules.ExponentialDecay(BASE_LR, STEPS, 0.95)
    step, exponential = build("step", step_epochs=10, step_factor=0.5), build("exponential")
    steps = range(0, 30 * STEPS, 3)
    assert [float(step(s)) for s in steps] == pytest.approx(
        [float(keras_step(s)) for s in steps], rel=1e-6
    )
    assert [float(exponential(s)) for s in steps] == pytest.approx(
        [float(keras_exponential(s)) for s in steps], rel=1e-5
    )

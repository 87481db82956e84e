"""KerasTuner sweeps: the space as data, errors before any trial, a digits search end to end
(interrupted and resumed), the best config through the trainer, the CLI, and a distributed search
with a chief and two workers on 127.0.0.1."""

import copy
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.conftest import REPO
from training import train, trainer, transfer
from training.config import config_from_args, deep_update, from_dict
from training.run import parse_args as training_parse_args
from tuning import hypermodel, spaces
from tuning.search import SearchSettings, make_tuner, run_search

# A tiny stagewise CNN on the 8x8 digits: a trial takes a few seconds.
FIXED = {
    "epochs": 2,
    "data": {"dataset": "digits", "image_size": 8},
    "model": {"name": "stagewise_cnn", "options": {"dense_layers": 0, "convs_per_stage": 1}},
    "hardware": {"precision": "float32"},
    # A backup at every epoch end: these take well under the default interval, and the resume
    # test cuts a trial after its second.
    "callbacks": {"checkpoint_interval": 0},
}
SPACE = {
    "model.options.num_stages": {"min": 1, "max": 2},
    "model.options.filters": {"values": [4, 8]},
    "optimizer.name": {"values": ["adam", "sgd"]},
    "optimizer.lr": {"min": 1e-2, "max": 3e-2},
    "data.batch_size": {"values": [16, 32]},
    "augment.preset": None,
}


def settings(tmp_path, **overrides):
    values = {
        "name": "digits",
        "output_dir": str(tmp_path),
        "max_trials": 3,
        "epochs": 3,
        "patience": 0,
    }
    return SearchSettings(**{**values, **overrides})


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# ---------------------------------------------------------------------------- the space as data


def test_default_space_has_the_family_knobs_on_the_right_scales():
    space = spaces.default_space("stagewise_cnn")
    assert space["optimizer.lr"] == {
        "type": "float",
        "min": 1e-5,
        "max": 1e-1,
        "sampling": "log",
        "default": 1e-3,
    }
    assert space["data.batch_size"]["values"] == [32, 64, 128]
    assert space["model.activation"]["values"] == ["relu", "leaky_relu", "elu", "swish", "gelu"]
    assert space["model.options.kernel_size"]["values"] == [3, 5]
    assert space["optimizer.weight_decay"]["sampling"] == "log"
    resnet = spaces.default_space("resnet20")
    assert "model.options.num_stages" not in resnet
    assert resnet["model.options.width"]["values"] == [0.5, 1.0, 2.0]
    assert {"model.activation", "model.dropout", "optimizer.lr", "augment.preset"} <= set(resnet)


def test_space_yaml_overrides_narrows_removes_and_fixed_values_win():
    space = spaces.resolve_space(
        "stagewise_cnn",
        {
            "optimizer.lr": {"min": 1e-4, "max": 1e-2},  # narrowed: keeps log sampling
            "model.options.filters": {"type": "int", "min": 8, "max": 64, "step": 8},  # replaced
            "model.activation": None,  # removed
            "model.options.squeeze_excitation": {"type": "boolean"},  # added
        },
        fixed={"data": {"batch_size": 16}, "optimizer": {"name": "sgd"}},
    )
    assert space["optimizer.lr"] == {
        "type": "float",
        "min": 1e-4,
        "max": 1e-2,
        "sampling": "log",
        "default": 1e-3,
    }
    assert space["model.options.filters"] == {"type": "int", "min": 8, "max": 64, "step": 8}
    assert "model.activation" not in space
    assert space["model.options.squeeze_excitation"] == {"type": "boolean"}
    # Fixed paths leave the space; the momentum, which only SGD reads, stays unconditionally.
    assert "data.batch_size" not in space and "optimizer.name" not in space
    assert "when" not in space["optimizer.momentum"]
    adam = spaces.resolve_space("stagewise_cnn", {}, fixed={"optimizer": {"name": "adam"}})
    assert "optimizer.momentum" not in adam
    # Narrowing below a default drops the default rather than failing.
    assert (
        "default"
        not in spaces.resolve_space(
            "stagewise_cnn", {"model.options.num_stages": {"min": 1, "max": 2}}
        )["model.options.num_stages"]
    )


def test_sampled_values_become_the_trial_config_with_fixed_options_kept():
    import keras_tuner

    space = spaces.resolve_space("stagewise_cnn", SPACE, FIXED)
    hp = keras_tuner.HyperParameters()
    values = hypermodel.sample(hp, space)
    # The first build uses the defaults: the first choice or the minimum.
    assert values["model.options.num_stages"] == 1 and values["optimizer.name"] == "adam"
    assert "optimizer.momentum" not in values  # conditional on sgd
    hp.values["optimizer.name"] = "sgd"
    hp.ensure_active_values()  # what KerasTuner does for a new trial's values
    assert 0.9 <= hypermodel.sample(hp, space)["optimizer.momentum"] <= 0.999
    config = hypermodel.apply_values(from_dict(copy.deepcopy(FIXED)), values)
    assert config.model.options == {
        "dense_layers": 0,
        "convs_per_stage": 1,
        "num_stages": 1,
        "filters": 4,
        "kernel_size": 3,
    }
    assert config.optimizer.lr == 1e-2 and config.data.batch_size == 16


class OneFloat(keras_tuner.HyperModel):
    def build(self, hp):
        hp.Float("lr", 1e-4, 1e-1, sampling="log")
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def test_the_default_seed_samples_the_same_trials_whatever_python_s_random_state(tmp_path):
    """KerasTuner takes seed 0 as unset and draws one from `random`; ours stays set."""
    import random

    sampled = []
    for state, name in [(1, "a"), (2, "b")]:
        random.seed(state)
        tuner = make_tuner(
            OneFloat(),
            settings(tmp_path),
            tmp_path / name,
            seed=from_dict(copy.deepcopy(FIXED)).seed,
            strategy=tf.distribute.get_strategy(),
        )
        trials = [tuner.oracle.create_trial(f"tuner{i}") for i in range(3)]
        sampled.append([trial.hyperparameters.values["lr"] for trial in trials])
    assert sampled[0] == sampled[1]
    assert len(set(sampled[0])) == 3


def test_momentum_is_sampled_as_one_minus_m_on_a_log_scale():
    import keras_tuner
    import numpy as np

    space = spaces.resolve_space("stagewise_cnn", {}, fixed={"optimizer": {"name": "sgd"}})
    assert space["optimizer.momentum"]["sampling"] == "log_one_minus"
    hp = keras_tuner.HyperParameters()
    assert hypermodel.sample(hp, space)["optimizer.momentum"] == 0.9  # the first build's default
    (tuner_hp,) = [h for h in hp.space if h.name == "1-optimizer.momentum"]
    momenta = []
    for seed in range(4000):  # what a random tuner hands a trial, and the value it becomes
        hp.values["1-optimizer.momentum"] = tuner_hp.random_sample(seed)
        momenta.append(hypermodel.sample(hp, space)["optimizer.momentum"])
    momenta = np.array(momenta)
    assert momenta.min() >= 0.9 and momenta.max() <= 0.999
    # log10(1 - m) is uniform on [-3, -1]: each quarter of that range holds a quarter of them.
    quarters = np.histogram(np.log10(1 - momenta), bins=4, range=(-3, -1))[0] / len(momenta)
    np.testing.assert_allclose(quarters, 0.25, atol=0.03)
    hp.values["1-optimizer.momentum"] = 0.001
    assert hypermodel.sample(hp, space)["optimizer.momentum"] == 0.999
    with pytest.raises(ValueError, match="log_one_minus sampling .* needs a float range below 1"):
        spaces.check_entry(
            "optimizer.momentum",
            {"type": "float", "min": 0.9, "max": 1.0, "sampling": "log_one_minus"},
        )


@pytest.mark.parametrize(
    "space, search, message",
    [
        ({}, {"tuner": "annealing"}, "Unknown tuner 'annealing'"),
        ({}, {"objective": "test_accuracy"}, "Unknown objective 'test_accuracy'"),
        (
            {"optimizer.lrr": {"type": "float", "min": 0.1, "max": 1.0}},
            {},
            "not a training-config path. Did you mean optimizer.lr?",
        ),
        ({"optimizer.lr": {"min": 0.1, "max": 0.01}}, {}, "min must be below max"),
        (
            {"model.options.depth": {"type": "choice", "values": [2, 3]}},
            {},
            "stagewise_cnn has no option 'depth'",
        ),
        (
            {"data.fit": {"type": "choice", "values": ["resize", "pad"]}},
            {},
            "fixed for a whole search",
        ),
        ({"augment.preset": {"values": ["none", "wild"]}}, {}, "the value 'wild' is not valid"),
        (
            {"optimizer.lr": {"type": "float", "min": 0.0, "max": 0.1, "sampling": "log"}},
            {},
            "log sampling needs min > 0",
        ),
        (
            {"model.dropout": {"type": "float", "min": 0, "max": 0.5, "values": [0.1]}},
            {},
            "a float entry does not take values",
        ),
        ({}, {"chief": "127.0.0.1:9000"}, "needs both --chief HOST:PORT and --worker-id"),
        ({}, {"hyperband_factor": 1}, "search.hyperband_factor must be an integer >= 2, got 1"),
        # Every value is validated as a trial's config would be: each choice, both ends of a range.
        (
            {"optimizer.name": {"values": ["sgd", "lamb"]}},
            {},
            "space optimizer.name: the value 'lamb' is not valid: Unknown optimizer 'lamb'",
        ),
        (
            {"model.activation": {"values": ["relu", "mish"]}},
            {},
            "the value 'mish' is not valid: Unknown model.activation 'mish'",
        ),
        (
            {"optimizer.momentum": {"type": "float", "min": 0.5, "max": 1.0}},
            {},
            "the value 1.0 is not valid: optimizer.momentum must be in [0, 1), got 1.0",
        ),
        (
            {"schedule.step_factor": {"type": "float", "min": 0.1, "max": 1.5}},
            {},
            "the value 1.5 is not valid: schedule.step_factor must be in (0, 1), got 1.5",
        ),
        ({"data.batch_size": {"values": [0, 32]}}, {}, "data.batch_size must be an integer >= 1"),
    ],
)
def test_bad_input_fails_before_any_trial(tmp_path, space, search, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run_search(copy.deepcopy(FIXED), settings(tmp_path, **search), space)
    assert not (tmp_path / "digits").exists()


def test_options_of_builders_that_take_any_keyword_are_not_checked():
    # resnet20's builder still takes **kwargs: only building the model could tell.
    config = from_dict({"model": {"name": "resnet20"}})
    spaces.check_values({"model.options.depth": {"type": "choice", "values": [2, 3]}}, config)
    with pytest.raises(ValueError, match="stagewise_cnn has no option 'depth'"):
        spaces.check_values(
            {"model.options.depth": {"type": "choice", "values": [2, 3]}},
            from_dict(copy.deepcopy(FIXED)),
        )


def test_a_path_both_fixed_and_searched_is_an_error():
    with pytest.raises(ValueError, match="also fixes this path"):
        spaces.resolve_space(
            "stagewise_cnn",
            {"optimizer.name": {"values": ["sgd"]}},
            fixed={"optimizer": {"name": "adam"}},
        )


# ---------------------------------------------------------------------------- a search end to end


class Interrupted(BaseException):
    """A kill: not an Exception, so KerasTuner does not record it as a failed trial."""


class InterruptAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Interrupted


class RecordEpochs(keras.callbacks.Callback):
    def __init__(self, record, trial):
        super().__init__()
        self.record, self.trial = record, trial

    def on_epoch_begin(self, epoch, logs=None):
        self.record.setdefault(self.trial, []).append(epoch + 1)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """3 trials of 3 epochs, interrupted in trial 1 after its second epoch, then resumed."""
    output = tmp_path_factory.mktemp("tuning")
    base_callbacks = hypermodel._trial_callbacks
    epochs_run = {}

    def with_extra(extra):
        def trial_callbacks(config, trial_dir, objective):
            return base_callbacks(config, trial_dir, objective) + extra(trial_dir.name)

        return trial_callbacks

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            hypermodel,
            "_trial_callbacks",
            with_extra(lambda trial: [InterruptAfter(2)] if trial == "trial_1" else []),
        )
        with pytest.raises(Interrupted):
            run_search(copy.deepcopy(FIXED), settings(output), SPACE)
    interrupted = {p.parent.name: p.read_text() for p in output.glob("digits/trial_*/trial.json")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            hypermodel,
            "_trial_callbacks",
            with_extra(lambda trial: [RecordEpochs(epochs_run, trial)]),
        )
        result = run_search(copy.deepcopy(FIXED), settings(output), SPACE)
    return {
        "result": result,
        "dir": output / "digits",
        "interrupted": interrupted,
        "epochs_run": epochs_run,
        "output": output,
    }


def test_resume_after_an_interruption_reruns_nothing_completed(search):
    # Trial 0 was complete, trial 1 was cut after epoch 2: the rerun continued trial 1 from its
    # backup (epoch 3 only) and ran trial 2 whole.
    assert search["epochs_run"] == {"trial_1": [3], "trial_2": [1, 2, 3]}
    assert json.loads(search["interrupted"]["trial_0"])["status"] == "COMPLETED"
    assert (search["dir"] / "trial_0" / "trial.json").read_text() == search["interrupted"][
        "trial_0"
    ]
    oracle = json.loads((search["dir"] / "oracle.json").read_text())
    assert oracle["run_times"] == {"0": 1, "1": 1, "2": 1}
    history = read_csv(search["dir"] / "trial_1" / "history.csv")
    assert [row["epoch"] for row in history] == ["1", "2", "3"]


def test_leaderboard_files_agree_with_each_trials_record(search):
    rows = read_csv(search["dir"] / "leaderboard.csv")
    board = json.loads((search["dir"] / "leaderboard.json").read_text())
    assert board["objective"] == "val_accuracy" and board["direction"] == "max"
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    assert sorted(row["trial"] for row in rows) == ["0", "1", "2"]
    scores = [float(row["val_accuracy"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    # Measured: 0.539, 0.533, 0.361 for these three 3-epoch trials on 8x8 digits (chance: 0.1).
    assert scores[0] >= 0.4
    for row, entry in zip(rows, board["trials"]):
        trial_dir = search["dir"] / f"trial_{row['trial']}"
        history = read_csv(trial_dir / "history.csv")
        best = max(float(h["val_accuracy"]) for h in history)
        assert entry["score"] == pytest.approx(best, abs=1e-7) == float(row["val_accuracy"])
        assert json.loads((trial_dir / "trial.json").read_text())["score"] == pytest.approx(best)
        assert entry["epochs"] == len(history) == 3
        hp = entry["hyperparameters"]
        assert hp["model.options.num_stages"] in (1, 2) and hp["model.options.filters"] in (4, 8)
        assert 1e-2 <= hp["optimizer.lr"] <= 3e-2 and hp["data.batch_size"] in (16, 32)
        assert ("optimizer.momentum" in hp) == (hp["optimizer.name"] == "sgd")
        assert 0.9 <= hp.get("optimizer.momentum", 0.9) <= 0.999  # m itself, not 1 - m
        assert "augment.preset" not in hp
        assert row["model.options.filters"] == str(hp["model.options.filters"])
    assert search["result"].rows[0]["trial"] == rows[0]["trial"]


def test_the_plot_has_a_panel_per_numeric_hyperparameter(search):
    import matplotlib.image

    image = matplotlib.image.imread(search["dir"] / "trials.png")
    # objective per trial, lr, weight decay, batch size, dropout, stages, filters, kernel size
    # (+ momentum when an SGD trial ran): 3 columns, 3 rows of 340 px.
    assert image.shape[1] == 1260 and image.shape[0] == 1020


def test_best_config_is_a_training_config_the_trainer_runs_unchanged(search, tmp_path, monkeypatch):
    path = search["dir"] / "best_config.yaml"
    values = yaml.safe_load(path.read_text())
    best = search["result"].rows[0]["hyperparameters"]
    config = from_dict(values)
    assert config.model.options == {
        "dense_layers": 0,
        "convs_per_stage": 1,
        "num_stages": best["model.options.num_stages"],
        "filters": best["model.options.filters"],
        "kernel_size": best["model.options.kernel_size"],
    }
    assert config.optimizer.lr == best["optimizer.lr"]
    assert config.optimizer.name == best["optimizer.name"]
    assert config.data.batch_size == best["data.batch_size"]
    # The full run keeps its own epochs and patience, not the trials'.
    assert (config.epochs, config.callbacks.early_stopping_patience) == (2, 10)
    assert (config.data.image_size, config.output.run_name) == (8, "digits-best")
    # What `python -m training.run --config best_config.yaml` parses is exactly this config.
    assert config_from_args(training_parse_args(["--config", str(path)])) == config
    monkeypatch.chdir(tmp_path)
    run = train(from_dict(values))
    assert str(run.run_dir) == os.path.join("saved_models", "digits-best")
    # Measured: 0.322 test accuracy after its 2 epochs (chance: 0.1; val accuracy 0.361).
    assert run.metrics["epochs_completed"] == 2 and run.metrics["test_accuracy"] >= 0.2
    assert (tmp_path / "saved_models" / "digits-best" / "serving" / "1").is_dir()


def test_retrain_best_trains_on_train_plus_validation_and_exports(search, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    again = run_search(copy.deepcopy(FIXED), settings(search["output"], retrain_best=True), SPACE)
    retrain = again.retrain
    assert str(retrain.run_dir) == os.path.join("saved_models", "digits-retrain")
    # 1437 train + 180 validation digits; the same 180 test digits as the search's runs.
    assert retrain.metrics["num_examples"] == {"train": 1617, "validation": 0, "test": 180}
    assert retrain.metrics["epochs_completed"] == 2
    assert (tmp_path / "saved_models" / "digits-retrain" / "serving" / "1").is_dir()


def test_rerunning_a_finished_search_runs_no_trial_and_more_trials_extend_it(search):
    output, before = search["output"], search["dir"] / "trial_0" / "trial.json"
    stamp = before.stat().st_mtime_ns
    again = run_search(copy.deepcopy(FIXED), settings(output), SPACE)
    assert [r["trial"] for r in again.rows] == [r["trial"] for r in search["result"].rows]
    assert before.stat().st_mtime_ns == stamp
    extended = run_search(copy.deepcopy(FIXED), settings(output, max_trials=4), SPACE)
    assert sorted(r["trial"] for r in extended.rows) == ["0", "1", "2", "3"]
    assert json.loads((search["dir"] / "oracle.json").read_text())["run_times"]["3"] == 1
    # A different search under the same name is refused, not mixed in.
    with pytest.raises(ValueError, match="different settings \\(space differ\\)"):
        run_search(copy.deepcopy(FIXED), settings(output), {**SPACE, "model.dropout": None})


# ---------------------------------------------------------------------------- from a source run


@pytest.fixture(scope="module")
def digits_source(tmp_path_factory):
    """The FIXED model trained on the digits 0-4."""
    output = tmp_path_factory.mktemp("source")
    fixed = copy.deepcopy(FIXED)
    fixed["model"]["options"]["num_stages"] = 2
    fixed["data"]["classes"] = [0, 1, 2, 3, 4]
    fixed["output"] = {"output_dir": str(output), "run_name": "source"}
    return train(from_dict(fixed))


def from_source(source, **options):
    fixed = copy.deepcopy(FIXED)
    fixed["model"]["options"].update({"num_stages": 2, **options})
    fixed["model"]["init_from"] = str(source.run_dir)
    fixed["data"]["classes"] = [5, 6, 7, 8, 9]
    return fixed


def test_a_search_from_a_source_run_searches_how_it_transfers(tmp_path, digits_source):
    fixed = from_source(digits_source)
    space = spaces.resolve_space("stagewise_cnn", {"augment.preset": None}, fixed)
    assert not [path for path in space if path.startswith(spaces.ARCHITECTURE_PREFIXES)]
    assert space["transfer.mode"]["values"] == ["finetune", "linear_probe"]
    assert space["transfer.backbone_lr_multiplier"]["when"] == {"transfer.mode": ["finetune"]}
    source = trainer.transfer_source(from_dict(fixed))
    model = hypermodel.TrialHyperModel(
        from_dict(fixed),
        space,
        hypermodel.prepare_data(from_dict(fixed), source),
        objective="val_accuracy",
        strategy=tf.distribute.get_strategy(),
        source=source,
    )
    built = {}
    for mode in ("linear_probe", "finetune"):
        hp = keras_tuner.HyperParameters()
        model.declare_hyperparameters(hp)
        hp.values["transfer.mode"] = mode
        built[mode] = model.build(hp)
    dense = built["linear_probe"].get_layer("stagewise_cnn").get_layer("predictions_dense")
    assert transfer.trainable_params(built["linear_probe"]) == dense.count_params()
    finetune = built["finetune"]
    assert all(layer.trainable for layer in finetune.get_layer("stagewise_cnn").layers)
    assert finetune.optimizer.lr_multiplier == 0.1  # the multiplier's default, the first build
    source_conv = next(layer for layer in source.model.layers if layer.weights)
    np.testing.assert_array_equal(
        finetune.get_layer("stagewise_cnn").get_layer(source_conv.name).get_weights()[0],
        source_conv.get_weights()[0],
    )
    result = run_search(fixed, settings(tmp_path, max_trials=2, epochs=1), {"augment.preset": None})
    assert [row["status"] for row in result.rows] == ["COMPLETED", "COMPLETED"]
    assert result.best_config.model.init_from == str(digits_source.run_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transfer": {"two_phase": True, "probe_epochs": 1}}, "a trial trains in one fit"),
        ({"model": {"options": {"filters": 4}}}, "does not match stagewise_cnn"),
        ({"space": {"model.options.filters": {"values": [4, 8]}}}, "keeps the source's"),
    ],
)
def test_a_search_whose_source_does_not_fit_fails_before_its_directory(
    tmp_path, digits_source, change, message
):
    fixed = from_source(digits_source)
    space = change.pop("space", {})
    for section, values in change.items():
        fixed.setdefault(section, {})
        deep_update(fixed[section], values)
    with pytest.raises(ValueError, match=re.escape(message)):
        run_search(fixed, settings(tmp_path), space)
    assert not (tmp_path / "digits").exists()


# ---------------------------------------------------------------------------- command line


def tuning_command(*args):
    return [sys.executable, "-m", "tuning.run", *args]


def environment():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


def test_cli_flags_files_and_sets_merge_into_the_sweep(tmp_path):
    from tuning.run import parse_args, sweep_from_args

    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {"data": {"batch_size": 16}, "search": {"tuner": "hyperband", "max_epochs": 9}}
        )
    )
    fixed, settings, space = sweep_from_args(
        parse_args(
            [
                "--config",
                str(path),
                "--model",
                "stagewise_cnn",
                "--image-size",
                "16",
                "--set",
                "optimizer.name=sgd",
                "--hyperband-factor",
                "4",
                "--max-epochs",
                "12",
                "--overwrite",
                "--space",
                "augment.preset=null",
            ]
        )
    )
    assert fixed == {
        "data": {"batch_size": 16, "image_size": 16},
        "model": {"name": "stagewise_cnn"},
        "optimizer": {"name": "sgd"},
    }
    assert (settings.tuner, settings.max_epochs, settings.hyperband_factor) == ("hyperband", 12, 4)
    assert settings.overwrite and settings.epochs == 10  # the default
    assert space == {"augment.preset": None}
    path.write_text(yaml.safe_dump({"search": {"tunr": "grid"}}))
    with pytest.raises(
        ValueError, match="Unknown config key 'search.tunr'. Did you mean search.tuner?"
    ):
        sweep_from_args(parse_args(["--config", str(path)]))


def test_cli_reports_a_bad_space_entry_before_any_trial(tmp_path):
    done = subprocess.run(
        tuning_command(
            "--model",
            "stagewise_cnn",
            "--output-dir",
            str(tmp_path),
            "--space",
            "optimizer.lr={min: 0.1, max: 0.01}",
        ),
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert (
        "error: space optimizer.lr: min must be below max, got min 0.1 and max 0.01" in done.stderr
    )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- distributed


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout, processes):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        crashed = [p for p in processes if p.poll() not in (None, 0)]
        if crashed:
            raise AssertionError(f"a process failed: {crashed[0].args}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s")


@pytest.mark.slow
def test_distributed_search_with_a_chief_and_two_workers_survives_a_killed_worker(tmp_path):
    """Every trial runs once; tuner1, killed mid-trial and restarted, resumes its trial."""
    sweep = {
        **copy.deepcopy(FIXED),
        "space": SPACE,
        "search": {
            "name": "dist",
            "output_dir": str(tmp_path),
            "max_trials": 4,
            "epochs": 6,
            "patience": 0,
        },
    }
    sweep_path = tmp_path / "sweep.yaml"
    sweep_path.write_text(yaml.safe_dump(sweep))
    search_dir = tmp_path / "dist"
    address = f"127.0.0.1:{free_port()}"
    logs = {}

    def start(worker_id, attempt=0):
        log = open(tmp_path / f"{worker_id}-{attempt}.log", "w")
        logs[worker_id, attempt] = log.name
        return subprocess.Popen(
            tuning_command(
                "--config", str(sweep_path), "--chief", address, "--worker-id", worker_id
            ),
            cwd=REPO,
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    processes = {"chief": start("chief")}
    try:
        wait_for(lambda: (search_dir / "oracle.json").exists(), 90, processes.values())
        processes["tuner0"], processes["tuner1"] = start("tuner0"), start("tuner1")

        def tuner1_mid_trial():
            try:
                oracle = json.loads((search_dir / "oracle.json").read_text())
            except json.JSONDecodeError:  # caught while the chief rewrites it
                return None
            trial = oracle.get("ongoing_trials", {}).get("tuner1")
            history = search_dir / f"trial_{trial}" / "history.csv"
            rows = len(read_csv(history)) if trial and history.exists() else 0
            # Keras writes the backup's metadata after its weights: the first backup is whole.
            # (A kill inside the very first backup write is not survivable yet: see the report.)
            backed_up = (
                search_dir / f"trial_{trial}" / "backup" / "training_metadata.json"
            ).exists()
            return trial if backed_up and 1 <= rows < 6 else None

        killed_trial = wait_for(tuner1_mid_trial, 150, list(processes.values()))
        processes["tuner1"].send_signal(signal.SIGKILL)
        processes["tuner1"].wait(timeout=30)
        processes["tuner1"] = start("tuner1", attempt=1)
        for worker in ("tuner0", "tuner1", "chief"):
            assert processes[worker].wait(timeout=180) == 0, open(
                logs[worker, 1 if worker == "tuner1" else 0]
            ).read()[-3000:]
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    board = json.loads((search_dir / "leaderboard.json").read_text())
    trials = {t["trial"]: t for t in board["trials"]}
    assert sorted(trials) == ["0", "1", "2", "3"]
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    oracle = json.loads((search_dir / "oracle.json").read_text())
    assert oracle["run_times"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    for trial_id, trial in trials.items():
        record = json.loads((search_dir / f"trial_{trial_id}" / "trial.json").read_text())
        assert record["score"] == pytest.approx(trial["score"])
        history = read_csv(search_dir / f"trial_{trial_id}" / "history.csv")
        assert [int(row["epoch"]) for row in history] == [1, 2, 3, 4, 5, 6]
    # The workers' live lines name each trial once: tuner1 finished the trial it was killed in.
    finished = []
    for (worker, attempt), path in logs.items():
        lines = [line for line in open(path) if line.startswith("trial ")]
        finished += [line.split()[1] for line in lines]
        if worker == "tuner1" and attempt == 1:
            # It resumed the trial it was killed in from its backup, not from epoch 1.
            assert lines[0].split()[1] == killed_trial
            first_epoch = next(line for line in open(path) if line.startswith("Epoch "))
            assert int(first_epoch.split()[1].split("/")[0]) > 1
        if worker == "chief":
            assert lines == []
    assert sorted(finished) == ["0", "1", "2", "3"]
    assert "rank" in open(logs["chief", 0]).read()

import argparse

import pytest
import yaml

from training.checks import ConfigError
from training.config import TrainConfig, add_arguments, config_from_args, from_dict


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_yaml_round_trip_repeats_the_config(tmp_path):
    config = parse(
        [
            "--model",
            "resnet20",
            "--lr",
            "0.05",
            "--augment-ops",
            "crop,flip",
            "--set",
            "model.options.depth_multiplier=2",
            "--nesterov",
        ]
    )
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    again = parse(["--config", str(path)])
    assert again == config
    assert again.augment.ops == ["crop", "flip"]
    assert again.model.options == {"depth_multiplier": 2}


def test_precedence_defaults_then_files_then_flags_then_set(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {"epochs": 7, "optimizer": {"lr": 0.1, "name": "sgd"}, "data": {"batch_size": 16}}
        )
    )
    later = tmp_path / "later.yaml"
    later.write_text(yaml.safe_dump({"optimizer": {"lr": 0.2}}))
    config = parse(
        [
            "--config",
            str(base),
            "--config",
            str(later),
            "--epochs",
            "3",
            "--set",
            "optimizer.momentum=0.5",
        ]
    )
    assert config.epochs == 3  # flag beats file
    assert config.optimizer.lr == 0.2  # later file beats earlier file
    assert config.optimizer.name == "sgd"  # file beats default
    assert config.optimizer.momentum == 0.5  # --set
    assert config.data.batch_size == 16
    assert config.data.dataset == "digits"  # default


def test_set_beats_flags():
    assert parse(["--lr", "0.3", "--set", "optimizer.lr=0.01"]).optimizer.lr == 0.01


def test_unknown_key_suggests_the_right_one(tmp_path):
    with pytest.raises(
        ValueError, match=r"Unknown config key 'optimizer.lrr'.*Did you mean optimizer.lr"
    ):
        parse(["--set", "optimizer.lrr=0.1"])
    path = tmp_path / "bad.yaml"
    path.write_text("optimiser: {lr: 0.1}\n")
    with pytest.raises(ValueError, match="Did you mean optimizer"):
        parse(["--config", str(path)])


def test_wrong_types_are_rejected_with_the_expected_type():
    with pytest.raises(ValueError, match=r"optimizer.lr: expected float, got 'fast'"):
        from_dict({"optimizer": {"lr": "fast"}})
    with pytest.raises(ValueError, match=r"epochs: expected int, got True"):
        from_dict({"epochs": True})
    assert from_dict({"optimizer": {"lr": 1}}).optimizer.lr == 1.0


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse(["--config", str(tmp_path / "nope.yaml")])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer": {"lr": -0.1}}, r"optimizer.lr must be > 0, got -0.1"),
        ({"data": {"batch_size": 0}}, r"data.batch_size must be an integer >= 1, got 0"),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"seed": -1}, r"seed must be an integer in \[0, 4294967295\], got -1"),
        ({"model": {"name": "resnet21"}}, r"Unknown model 'resnet21'.*Valid: .*resnet20"),
        (
            {"model": {"name": "resnet20"}, "data": {"image_size": 3}},
            "below resnet20's minimum input",
        ),
        ({"optimizer": {"name": "adamx"}}, r"Unknown optimizer 'adamx'.*Valid: sgd"),
        ({"schedule": {"name": "cosin"}}, r"Did you mean 'cosine'"),
        ({"augment": {"preset": "heavy"}}, "Unknown augmentation preset"),
        ({"data": {"val_split": 1.5}}, r"data.val_split must be in \[0, 1\)"),
        ({"optimizer": {"clip_norm": 1.0, "clip_value": 1.0}}, "Choose at most one of"),
        ({"hardware": {"precision": "fp8"}}, "Unknown precision 'fp8'"),
        (
            {"hardware": {"steps_per_execution": 0}},
            r"hardware.steps_per_execution must be an integer >= 1, got 0",
        ),
        ({"schedule": {"warmup_epochs": 30}}, r"schedule.warmup_epochs must be in \[0, 20\)"),
        ({"hardware": {"sub_batches": 0}}, r"hardware.sub_batches must be an integer >= 1, got 0"),
        (
            {"hardware": {"sub_batches": 5}, "data": {"batch_size": 4}},
            r"hardware.sub_batches \(5\) must be at most the batch size per replica \(4\)",
        ),
        (
            {"model": {"name": "stagewise_cnn", "options": {"depth": 3}}},
            "stagewise_cnn has no option 'depth'; its options are .*num_stages",
        ),
        ({"model": {"options": {"num_classes": 3}}}, "set by the trainer"),
    ],
)
def test_bad_values_are_rejected_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig().replace(overrides).validate()


def test_replace_merges_model_options():
    config = TrainConfig().replace({"model": {"options": {"alpha": 0.5}}})
    assert config.replace({"model": {"options": {"depth": 2}}}).model.options == {
        "alpha": 0.5,
        "depth": 2,
    }


def test_help_is_grouped_by_section():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    titles = [group.title for group in parser._action_groups]
    for title in (
        "data",
        "model",
        "optimizer",
        "learning-rate schedule",
        "augmentation",
        "callbacks",
        "hardware",
        "output",
    ):
        assert title in titles
    assert "100%%" not in parser.format_help() and "100%" in parser.format_help()


# Every flag the help shows with a set of valid names or a range, with a value outside it, and
# the setting the message must name. test_every_checked_flag_has_a_bad_value keeps it complete.
BAD_FLAGS = [
    (["--epochs", "0"], "epochs"),
    (["--val-split", "1.0"], "data.val_split"),
    (["--test-split", "-0.1"], "data.test_split"),
    (["--val-split", "0.5", "--test-split", "0.5"], "data.val_split + data.test_split"),
    (["--image-size", "0"], "data.image_size"),
    (["--image-size", "16"], "data.image_size 16 is below lenet5"),
    (["--fit", "stretch"], "fit method (data.fit) 'stretch'"),
    (["--batch-size", "0"], "data.batch_size"),
    (["--model", "resnet21"], "model 'resnet21'"),
    (["--activation", "relu7"], "model.activation 'relu7'"),
    (["--normalization", "batchnorm"], "model.normalization 'batchnorm'"),
    (["--kernel-initializer", "he"], "model.kernel_initializer 'he'"),
    (["--dropout", "1.0"], "model.dropout"),
    (["--l2", "-1"], "model.l2"),
    (["--activation", "leaky_relu", "--leaky-slope", "1.5"], "model.leaky_slope"),
    (
        ["--model", "stagewise_cnn", "--dropout", "0.1", "--set", "model.options.depth=3"],
        "stagewise_cnn has no option 'depth'",
    ),
    (["--init-from", "no/such/run"], "init_from"),
    (["--transfer", "distill"], "transfer mode 'distill'"),
    (["--transfer", "partial", "--trainable-from", "conv4"], "need(s) --init-from"),
    (["--feature-layer", "c5_conv"], "need(s) --init-from"),
    (["--two-phase"], "need(s) --init-from"),
    (["--backbone-lr-multiplier", "0"], "backbone_lr_multiplier"),
    (
        ["--model", "resnet50", "--init-from", "imagenet", "--two-phase", "--probe-epochs", "0"],
        "probe_epochs",
    ),
    (["--classes", "5"], "data.classes"),
    (["--subset-per-class", "0"], "data.subset_per_class"),
    (["--optimizer", "lamb"], "optimizer 'lamb'"),
    (["--lr", "0"], "optimizer.lr"),
    (["--momentum", "1.0"], "optimizer.momentum"),
    (["--nesterov"], "optimizer.nesterov"),
    (["--weight-decay", "-0.1"], "optimizer.weight_decay"),
    (["--optimizer", "rmsprop", "--rho", "1.0"], "optimizer.rho"),
    (["--epsilon", "0"], "optimizer.epsilon"),
    (["--clip-value", "0"], "optimizer.clip_value"),
    (["--clip-norm", "-1"], "optimizer.clip_norm"),
    (["--global-clip-norm", "0"], "optimizer.global_clip_norm"),
    (["--clip-norm", "1", "--clip-value", "1"], "optimizer.clip_value"),
    (["--label-smoothing", "1.0"], "optimizer.label_smoothing"),
    (["--scale-lr", "sqrt"], "learning-rate scaling rule 'sqrt'"),
    (["--schedule", "linear"], "schedule 'linear'"),
    (["--warmup-epochs", "-1"], "schedule.warmup_epochs"),
    (["--warmup-epochs", "20"], "schedule.warmup_epochs"),
    (["--schedule", "plateau", "--warmup-epochs", "1"], "schedule.warmup_epochs"),
    (["--step-epochs", "0"], "schedule.step_epochs"),
    (["--schedule", "step", "--step-factor", "2"], "schedule.step_factor"),
    (["--decay-rate", "1.0"], "schedule.decay_rate"),
    (["--tau-epochs", "0"], "schedule.tau_epochs"),
    (["--min-lr", "-0.1"], "schedule.min_lr"),
    (["--min-lr", "0.1"], "schedule.min_lr"),
    (["--plateau-patience", "0"], "schedule.plateau_patience"),
    (["--plateau-factor", "1.0"], "schedule.plateau_factor"),
    (["--augment", "heavy"], "augmentation preset 'heavy'"),
    (["--augment-ops", "flip,blur"], "augmentation op 'blur'"),
    (["--patience", "-1"], "callbacks.early_stopping_patience"),
    (["--max-accuracy-drop", "1.5"], "callbacks.max_accuracy_drop"),
    (["--max-val-drop", "0"], "callbacks.max_val_drop"),
    (["--min-delta", "-0.01"], "callbacks.min_delta"),
    (["--checkpoint-interval", "-5"], "callbacks.checkpoint_interval"),
    (["--precision", "fp8"], "precision 'fp8'"),
    (["--steps-per-execution", "0"], "hardware.steps_per_execution"),
    (["--sub-batches", "0"], "hardware.sub_batches"),
    (["--sub-batches", "64", "--batch-size", "32"], "hardware.sub_batches (64)"),
    (["--seed", "-1"], "seed must be an integer in"),
    (["--threads", "all"], "threads 'all'"),
    (["--strategy", "parameter_server"], "strategy 'parameter_server'"),
    (["--strategy", "multi_worker"], "multi_worker needs an explicit run_name"),
    (["--run-name", "../escape"], "output.run_name '../escape'"),
]
# Flags with no valid names or range to leave.
UNCHECKED_FLAGS = {
    "--dataset",
    "--data-dir",
    "--manual-dir",
    "--cache",
    "--ema",
    "--stop-at-perfect-accuracy",
    "--checkpoint-best",
    "--tensorboard",
    "--output-dir",
    "--overwrite",
    # Needs the data: refused once it is read, before the run directory.
    "--binary",
}


@pytest.mark.parametrize("argv, setting", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_flag_stops_the_cli_before_any_file_is_written(tmp_path, monkeypatch, argv, setting):
    from training import trainer
    from training.run import main

    def train(config):
        raise AssertionError(f"{argv} passed the validation")

    monkeypatch.setattr(trainer, "train", train)
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--output-dir", str(tmp_path)])
    message = str(stopped.value.code)
    assert message.startswith("error: ") and setting in message
    assert list(tmp_path.iterdir()) == []


def test_every_checked_flag_has_a_bad_value():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "config", "set")
    }
    covered = {arg for argv, _ in BAD_FLAGS for arg in argv if arg.startswith("--")}
    assert flags - UNCHECKED_FLAGS == covered - {"--set"}


def test_the_late_step_factor_failure_now_leaves_nothing_and_the_fix_runs(tmp_path):
    """The issue's reproducer; a directory holding only the config.yaml of a run that never
    finished an epoch is taken over by the next command, whatever its config."""
    from training.run import main

    command = [
        "--schedule",
        "step",
        "--run-name",
        "x",
        "--output-dir",
        str(tmp_path),
        "--epochs",
        "1",
        "--model",
        "stagewise_cnn",
        "--image-size",
        "8",
    ]
    with pytest.raises(SystemExit, match="schedule.step_factor must be in \\(0, 1\\), got 2.0"):
        main([*command, "--step-factor", "2"])
    assert list(tmp_path.iterdir()) == []
    # What the old trainer left behind: a config.yaml and no epoch.
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.yaml").write_text(
        TrainConfig().replace({"schedule": {"name": "step", "step_factor": 2.0}}).to_yaml()
    )
    main([*command, "--step-factor", "0.5"])
    saved = yaml.safe_load((tmp_path / "x" / "config.yaml").read_text())
    assert saved["schedule"]["step_factor"] == 0.5
    assert (tmp_path / "x" / ".finished").is_file()


def test_the_help_lists_the_valid_names_from_the_owning_registries():
    from training import augment, hardware, optimizers, schedules
    from training.config import leaf_fields
    from zoo import options

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = parser.format_help()
    registries = {
        field.metadata["choices"]
        for _, field in leaf_fields(TrainConfig)
        if field.metadata.get("choices")
    }
    assert len(registries) == 9
    for names in (
        optimizers.OPTIMIZERS,
        schedules.SCHEDULES,
        tuple(augment.PRESETS),
        hardware.PRECISIONS,
        hardware.THREADS,
        hardware.STRATEGIES,
        options.NORMALIZATIONS,
    ):
        assert "{" + ",".join(names) + "}" in text
    assert "--scale-lr {linear}" in text

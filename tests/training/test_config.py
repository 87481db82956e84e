import argparse

import pytest
import yaml

from training.config import TrainConfig, add_arguments, config_from_args, from_dict


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_yaml_round_trip_repeats_the_config(tmp_path):
    config = parse(["--model", "resnet20", "--lr", "0.05", "--augment-ops", "crop,flip",
                    "--set", "model.options.depth_multiplier=2", "--nesterov"])
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    again = parse(["--config", str(path)])
    assert again == config
    assert again.augment.ops == ["crop", "flip"]
    assert again.model.options == {"depth_multiplier": 2}


def test_precedence_defaults_then_files_then_flags_then_set(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"epochs": 7, "optimizer": {"lr": 0.1, "name": "sgd"},
                                    "data": {"batch_size": 16}}))
    later = tmp_path / "later.yaml"
    later.write_text(yaml.safe_dump({"optimizer": {"lr": 0.2}}))
    config = parse(["--config", str(base), "--config", str(later), "--epochs", "3",
                    "--set", "optimizer.momentum=0.5"])
    assert config.epochs == 3  # flag beats file
    assert config.optimizer.lr == 0.2  # later file beats earlier file
    assert config.optimizer.name == "sgd"  # file beats default
    assert config.optimizer.momentum == 0.5  # --set
    assert config.data.batch_size == 16
    assert config.data.dataset == "digits"  # default


def test_set_beats_flags():
    assert parse(["--lr", "0.3", "--set", "optimizer.lr=0.01"]).optimizer.lr == 0.01


def test_unknown_key_suggests_the_right_one(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown config key 'optimizer.lrr'.*Did you mean optimizer.lr"):
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
        ({"optimizer": {"lr": -0.1}}, "learning rate must be positive"),
        ({"data": {"batch_size": 0}}, "batch_size must be at least 1"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"model": {"name": "resnet21"}}, r"Unknown model 'resnet21'.*Valid: .*resnet20"),
        ({"model": {"name": "resnet20"}, "data": {"image_size": 3}}, "below resnet20's minimum input"),
        ({"optimizer": {"name": "adamx"}}, r"Unknown optimizer 'adamx'.*Valid: sgd"),
        ({"schedule": {"name": "cosin"}}, r"Did you mean cosine"),
        ({"augment": {"preset": "heavy"}}, "Unknown augmentation preset"),
        ({"data": {"val_split": 1.5}}, r"val_split must be in \[0, 1\)"),
        ({"optimizer": {"clip_norm": 1.0, "clip_value": 1.0}}, "choose one gradient clipping"),
        ({"hardware": {"precision": "fp8"}}, "Unknown precision 'fp8'"),
        ({"schedule": {"warmup_epochs": 30}}, "must be shorter than the run"),
    ],
)
def test_bad_values_are_rejected_before_training(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig().replace(overrides).validate()


def test_help_is_grouped_by_section():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    titles = [group.title for group in parser._action_groups]
    for title in ("data", "model", "optimizer", "learning-rate schedule", "augmentation",
                  "callbacks", "hardware", "output"):
        assert title in titles
    assert "100%%" not in parser.format_help() and "100%" in parser.format_help()

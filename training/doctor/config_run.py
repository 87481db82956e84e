"""The doctor on a trainer config: the same data, model and compile steps as
`python -m training.run`, so a config that trains is a config the doctor examines."""

import math
import pathlib
import shlex

import keras

from training import hardware, rundir, trainer
from training.doctor.examine import check_names, examine


def examine_config(config, *, checks=(), budget=None):
    """Validate `config`, build its data and model as the trainer does, and examine them.
    The doctor runs on one device; `checks` (default all) picks checks by name."""
    config.validate()
    names = check_names(list(checks))
    hardware.apply_precision(config.hardware.precision, config.model.name)
    keras.utils.set_random_seed(config.seed)
    prepared = trainer.prepare_data(config)
    batch = config.data.batch_size
    # Unaugmented pipelines for the checks that look at the data or memorize it.
    plain = trainer.make_pipelines(
        config.replace({"augment": {"preset": "none", "ops": []}}), prepared, batch
    )
    augmented = trainer.make_pipelines(config, prepared, batch)["train"]
    model = trainer.build_model(
        config, prepared.input_shape, prepared.num_classes, prepared.mean, prepared.std
    )
    trainer.compile_model(
        model,
        config,
        steps_per_epoch=math.ceil(prepared.num_examples["train"] / batch),
        replicas=1,
        num_classes=prepared.num_classes,
    )
    return examine(
        model,
        plain["train"],
        plain.get("validation"),
        test_data=plain.get("test"),
        augmented_data=augmented,
        checks=names,
        class_names=prepared.class_names,
        budget=budget,
        seed=config.seed,
    )


def report_dir(config) -> pathlib.Path:
    """saved_models/doctor/<run-name>: the run's name (default <model>-<dataset>). A doctor
    report is cheap to redo, so the latest replaces the one before: never marked finished, the
    directory is always the one resolve_run_dir hands back to resume."""
    return rundir.resolve_run_dir(
        pathlib.Path(config.output.output_dir) / "doctor",
        config.output.run_name,
        default_name=f"{config.model.name}-{trainer.dataset_label(config.data.dataset)}",
    ).path


def rerun_command(argv, learning_rate) -> str:
    """The `python -m training.run` command for the doctor's `argv` at `learning_rate`."""
    kept, arguments = [], iter(argv)
    for argument in arguments:
        if argument in ("--check", "--lr"):
            next(arguments, None)  # and its value
        elif argument == "--set":
            value = next(arguments, "")
            if not value.startswith("optimizer.lr="):
                kept += [argument, value]
        elif not argument.startswith(("--check=", "--lr=", "--set=optimizer.lr=")):
            kept.append(argument)
    return shlex.join(["python", "-m", "training.run", *kept, "--lr", f"{learning_rate:.2g}"])

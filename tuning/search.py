"""A KerasTuner search over training configs: settings, tuners, leaderboard, best config, plot.

    result = run_search({"model": {"name": "stagewise_cnn"}}, SearchSettings(max_trials=20), space)

Everything lands in `<output_dir>/<name>/`, which is KerasTuner's own project directory (its
oracle.json and trial_<id>/ folders, where each trial's history.csv is written) and holds
`search.yaml` (the resolved sweep), `leaderboard.csv`, `leaderboard.json`, `best_config.yaml`
and `trials.png`. The same call again resumes the search; `overwrite=True` starts it over.
"""

import contextlib
import csv
import dataclasses
import io
import logging
import os
import pathlib
import re
import shutil

import yaml

from training import checks, rundir
from training.config import TrainConfig, from_dict, load_yaml, option
from tuning import spaces
from tuning.hypermodel import OBJECTIVES, sample

log = logging.getLogger("tuning")

TUNERS = ("random", "bayesian", "hyperband", "grid")
# What a rerun may change without making it another search.
RESUMABLE_CHANGES = ("max_trials", "overwrite", "retrain_best", "chief", "worker_id")
WORKER_ID = re.compile(r"^(chief|tuner\d+)$")


@dataclasses.dataclass
class SearchSettings:
    """The `search:` section of a sweep, and the tuner's command-line flags."""

    tuner: str = option("random", "the KerasTuner tuner", choices="tuning.search.TUNERS")
    max_trials: int = option(10, "trials to run (hyperband decides its own)")
    epochs: int = option(
        10, "epochs per trial; the full run (best_config.yaml) keeps the config's own epochs"
    )
    patience: int = option(3, "early stopping inside each trial (0: off)")
    max_epochs: int = option(27, "hyperband: the epochs of its longest trials")
    hyperband_factor: int = option(
        3, "hyperband: the factor by which each bracket cuts the trials and raises their epochs"
    )
    objective: str = option(
        "val_accuracy",
        "what to optimize (the test split is never looked at)",
        choices="tuning.hypermodel.OBJECTIVES",
    )
    name: str | None = option(
        None, "search name (default <model>-<dataset>-<tuner>)", group="output"
    )
    output_dir: str = option(
        "saved_models/tuning", "where searches land", metavar="DIR", group="output"
    )
    overwrite: bool = option(False, "start the search over instead of resuming it", group="output")
    retrain_best: bool = option(
        False, "retrain the best config on train+validation and export it", group="output"
    )
    chief: str | None = option(
        None,
        "address of the chief, which serves the oracle",
        metavar="HOST:PORT",
        group="distributed search",
    )
    worker_id: str | None = option(
        None,
        "chief on the chief; tuner0, tuner1, ... on the workers",
        metavar="ID",
        group="distributed search",
    )

    def check(self):
        checks.one_of("tuner", self.tuner, TUNERS)
        checks.one_of("objective", self.objective, OBJECTIVES)
        for key, least in (
            ("max_trials", 1),
            ("epochs", 1),
            ("patience", 0),
            ("max_epochs", 1),
            ("hyperband_factor", 2),
        ):
            checks.in_range(f"search.{key}", getattr(self, key), least, integer=True)
        checks.require(
            (self.chief is None) == (self.worker_id is None),
            "a distributed search needs both --chief HOST:PORT and --worker-id (chief, tuner0, "
            f"tuner1, ...); got chief={self.chief!r}, worker_id={self.worker_id!r}.",
        )
        if self.chief is not None:
            chief_address(self.chief)
            checks.require(
                WORKER_ID.match(str(self.worker_id)),
                f"worker_id must be 'chief' or tuner<N> (tuner0, tuner1, ...), got "
                f"{self.worker_id!r}.",
            )
        return self

    @property
    def is_chief(self):
        """Whether this process keeps the record: the chief, or the only process."""
        return self.worker_id in (None, "chief")


@dataclasses.dataclass
class SearchResult:
    search_dir: pathlib.Path
    rows: list  # the leaderboard, best first (empty on a worker)
    best_config: TrainConfig = None
    retrain: object = None  # training.trainer.RunResult of --retrain-best


def chief_address(text):
    host, sep, port = str(text).rpartition(":")
    checks.require(
        sep and host and port.isdigit() and 0 < int(port) < 65536,
        f"--chief must be HOST:PORT (e.g. 127.0.0.1:8000), got {text!r}.",
    )
    return host, int(port)


def load_sweep(path) -> tuple:
    """A sweep YAML -> (fixed config values, search settings values, space overrides)."""
    values = load_yaml(path)
    search = values.pop("search", None) or {}
    space = values.pop("space", None) or {}
    for name, section in (("search", search), ("space", space)):
        if not isinstance(section, dict):
            raise ValueError(f"{path}: the {name} section must be a mapping, got {section!r}.")
    return values, search, space


# ---------------------------------------------------------------------------- preparing


def _search_name(config: TrainConfig, settings: SearchSettings):
    from training.trainer import dataset_label

    default = f"{config.model.name}-{dataset_label(config.data.dataset)}-{settings.tuner}"
    name = settings.name or default
    return rundir.sanitize_run_name(name)


def trial_base_config(config: TrainConfig, settings: SearchSettings) -> TrainConfig:
    """The config every trial starts from: short runs with early stopping."""
    epochs = settings.max_epochs if settings.tuner == "hyperband" else settings.epochs
    return config.replace(
        {"epochs": epochs, "callbacks": {"early_stopping_patience": settings.patience}}
    )


def check_search(config: TrainConfig, settings: SearchSettings, space: dict):
    """Everything that can be checked before any data is read."""
    settings.check()
    config.validate()
    if config.hardware.strategy == "multi_worker":
        raise ValueError(
            "a search runs each trial in one process; distribute the search with "
            "--chief/--worker-id instead of hardware.strategy multi_worker."
        )
    if config.transfer.two_phase:
        raise ValueError(
            "transfer.two_phase: a trial trains in one fit; search transfer.mode "
            "(linear_probe, finetune, partial) and transfer.backbone_lr_multiplier instead, "
            "then train the best config with --two-phase."
        )
    base = trial_base_config(config, settings)
    spaces.check_paths(space, base)
    spaces.check_values(space, base)


def _comparable(sweep):
    return {
        **sweep,
        "search": {k: v for k, v in sweep["search"].items() if k not in RESUMABLE_CHANGES},
    }


def _claim_search_dir(search_dir: pathlib.Path, sweep: dict, settings: SearchSettings):
    """Start over (overwrite, by the chief only), or check a resumed search is the same one."""
    record = search_dir / "search.yaml"
    if settings.overwrite and settings.is_chief and search_dir.exists():
        shutil.rmtree(search_dir)
    if record.exists():
        saved = yaml.safe_load(record.read_text())
        if _comparable(saved) != _comparable(sweep):
            differ = [
                k
                for k in ("config", "search", "space")
                if _comparable(saved)[k] != _comparable(sweep)[k]
            ]
            raise ValueError(
                f"{search_dir} holds a search with different settings ({', '.join(differ)} "
                f"differ). Rerun it with the same settings to resume it, pass --overwrite to "
                f"start it over, or choose another --name."
            )
    if settings.is_chief:
        search_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_text_atomic(record, yaml.safe_dump(sweep, sort_keys=False))


def _set_distributed_environment(settings: SearchSettings):
    """KerasTuner reads these when a tuner is created: the chief serves the oracle on
    HOST:PORT, every other process asks it for trials."""
    if settings.chief is None:
        for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
            os.environ.pop(key, None)
        return
    host, port = chief_address(settings.chief)
    os.environ.update(
        KERASTUNER_TUNER_ID=settings.worker_id,
        KERASTUNER_ORACLE_IP=host,
        KERASTUNER_ORACLE_PORT=str(port),
    )


def _quiet_chief(settings: SearchSettings):
    """The chief of a distributed search runs no trial, and all it would print while serving
    is keras-tuner 1.4.8's stray print of each condition it sends (conditions.py, to_proto)."""
    if settings.chief is None or not settings.is_chief:
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(io.StringIO())


# ---------------------------------------------------------------------------- tuners


def _tuner_classes():
    """The KerasTuner tuners, each with the two things a search here adds: the trial's
    directory for the trainer's callbacks, and a live line per finished trial."""
    import keras_tuner

    class TrialRunner:
        def run_trial(self, trial, *args, **kwargs):
            trial_dir = pathlib.Path(self.get_trial_dir(trial.trial_id))
            return super().run_trial(trial, *args, trial_dir=trial_dir, **kwargs)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            finished = self.oracle.get_trial(trial.trial_id)
            print(live_line(trial_row(finished, self.hypermodel.space)), flush=True)

    return {
        "random": type("RandomSearch", (TrialRunner, keras_tuner.RandomSearch), {}),
        "bayesian": type(
            "BayesianOptimization", (TrialRunner, keras_tuner.BayesianOptimization), {}
        ),
        "hyperband": type("Hyperband", (TrialRunner, keras_tuner.Hyperband), {}),
        "grid": type("GridSearch", (TrialRunner, keras_tuner.GridSearch), {}),
    }


def make_tuner(hypermodel, settings: SearchSettings, search_dir: pathlib.Path, *, seed, strategy):
    import keras_tuner

    objective = keras_tuner.Objective(settings.objective, OBJECTIVES[settings.objective])
    kwargs = dict(
        hypermodel=hypermodel,
        objective=objective,
        # KerasTuner takes a falsy seed as "none" and draws one from Python's global `random`
        # (Oracle.__init__: `seed or random.randint(...)`), so our default seed 0 sampled
        # different trials from run to run: shift every seed by one to keep it set.
        seed=seed + 1,
        directory=str(search_dir.parent),
        project_name=search_dir.name,
        overwrite=False,  # _claim_search_dir decides, on the chief only
        distribution_strategy=strategy if strategy.num_replicas_in_sync > 1 else None,
    )
    if settings.tuner == "hyperband":
        kwargs.update(max_epochs=settings.max_epochs, factor=settings.hyperband_factor)
    else:
        kwargs.update(max_trials=settings.max_trials)
    return _tuner_classes()[settings.tuner](**kwargs)


# ---------------------------------------------------------------------------- the search


def run_search(fixed: dict, settings: SearchSettings, space_overrides=None) -> SearchResult:
    """Search, then (on the chief or the only process) write the leaderboard, the best config
    and the plot, and retrain the best config if asked.

    `fixed` holds the sweep's config sections (nested dicts, as in YAML): with the defaults
    they make the full training run the search tunes (its epochs are the full run's), and
    the paths they set leave the space. `space_overrides` is the sweep's `space:` section.
    """
    config = from_dict(fixed)
    space = spaces.resolve_space(config.model.name, space_overrides, fixed)
    check_search(config, settings, space)
    from training import hardware, trainer
    from tuning.hypermodel import TrialHyperModel, prepare_data

    trainer.apply_threads(config)  # before TensorFlow's first op; for the base batch size
    # The data and the transfer source are read, and checked, before the search directory.
    source = trainer.transfer_source(config)
    search_data = prepare_data(config, source)
    if settings.objective == "val_top5_accuracy" and search_data.num_classes < 5:
        raise ValueError(
            f"val_top5_accuracy needs at least 5 classes; this dataset has "
            f"{search_data.num_classes}."
        )
    strategy = hardware.resolve_strategy(config.hardware.strategy)
    hypermodel = TrialHyperModel(
        trial_base_config(config, settings),
        space,
        search_data,
        objective=settings.objective,
        strategy=strategy,
        source=source,
    )
    if source is not None:  # the source fits the model as configured
        hypermodel.pretrained_backbone(hypermodel.trial_config)

    search_dir = pathlib.Path(settings.output_dir) / _search_name(config, settings)
    sweep = {
        "config": config.to_dict(),
        "search": {**dataclasses.asdict(settings), "name": search_dir.name},
        "space": space,
    }
    _claim_search_dir(search_dir, sweep, settings)
    _set_distributed_environment(settings)
    tuner = make_tuner(hypermodel, settings, search_dir, seed=config.seed, strategy=strategy)
    log.info(
        "Search %s: %s tuner, %s, %d hyperparameters, objective %s%s",
        search_dir,
        settings.tuner,
        config.model.name,
        len(space),
        settings.objective,
        f", worker {settings.worker_id} of chief {settings.chief}" if settings.chief else "",
    )
    # KerasTuner's own per-trial tables give way to one line per finished trial.
    tuner.oracle.verbose = 0
    with _quiet_chief(settings):
        tuner.search(epochs=hypermodel.trial_config.epochs)
    if not settings.is_chief:
        return SearchResult(search_dir=search_dir, rows=[])

    rows = leaderboard(tuner.oracle, space, settings.objective)
    write_leaderboard(rows, search_dir, settings.objective)
    print(format_leaderboard(rows, settings.objective), flush=True)
    plot_trials(rows, space, settings.objective, search_dir / "trials.png")
    completed = [row for row in rows if row["status"] == "COMPLETED"]
    if not completed:
        raise RuntimeError(
            f"No trial of {search_dir} completed; see the trial messages in "
            f"{search_dir / 'leaderboard.json'}."
        )
    best = best_config(
        config,
        completed[0]["hyperparameters"],
        search_dir.name,
        image_size=search_data.input_shape[0],
    )
    rundir.write_text_atomic(search_dir / "best_config.yaml", best.to_yaml())
    log.info(
        "Best trial %s: %s %.4f; its config: %s",
        completed[0]["trial"],
        settings.objective,
        completed[0]["score"],
        search_dir / "best_config.yaml",
    )
    retrain = None
    if settings.retrain_best:
        from training import train

        retrain = train(retrain_config(best))
    return SearchResult(search_dir=search_dir, rows=rows, best_config=best, retrain=retrain)


def best_config(
    config: TrainConfig, hyperparameters: dict, search_name, *, image_size
) -> TrainConfig:
    """The full training run with the best trial's values: `python -m training.run --config`
    takes it as it is."""
    from tuning.hypermodel import apply_values

    best = apply_values(config, hyperparameters)
    return best.replace(
        {"data": {"image_size": image_size}, "output": {"run_name": f"{search_name}-best"}}
    ).validate()


def retrain_config(best: TrainConfig) -> TrainConfig:
    """The best config trained on train + validation: with no validation split carved out,
    nothing is left to stop early on or pick a best epoch by, so it runs its full epochs."""
    return best.replace(
        {
            "data": {"val_split": 0.0},
            "callbacks": {"early_stopping_patience": 0, "checkpoint_best": False},
            "output": {"run_name": best.output.run_name.removesuffix("-best") + "-retrain"},
        }
    )


# ---------------------------------------------------------------------------- results


def trial_row(trial, space) -> dict:
    """One trial as a leaderboard row; `hyperparameters` holds the active values of the space."""
    # The space's values, as the trial's build drew them (some hyperparameters are mapped).
    values = sample(trial.hyperparameters.copy(), space)

    def metric(name):
        return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None

    epochs = metric("epochs")
    return {
        "trial": trial.trial_id,
        "status": trial.status,
        "score": None if trial.score is None else float(trial.score),
        "epochs": None if epochs is None else int(epochs),
        "seconds": metric("seconds"),
        "hyperparameters": {k: v.item() if hasattr(v, "item") else v for k, v in values.items()},
        "message": trial.message,
    }


def leaderboard(oracle, space, objective) -> list:
    """Every trial, completed ones best first (by the objective), then the others by id."""
    rows = [trial_row(trial, space) for trial in oracle.trials.values()]
    completed = sorted(
        (r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None),
        key=lambda r: r["score"],
        reverse=OBJECTIVES[objective] == "max",
    )
    others = sorted((r for r in rows if r not in completed), key=lambda r: r["trial"])
    for rank, row in enumerate(completed, start=1):
        row["rank"] = rank
    return completed + others


def _columns(rows):
    paths = []
    for row in rows:
        paths += [p for p in row["hyperparameters"] if p not in paths]
    return paths


def write_leaderboard(rows, search_dir: pathlib.Path, objective):
    paths = _columns(rows)
    header = ["rank", "trial", "status", objective, "epochs", "seconds"] + paths
    lines = [header] + [
        [
            row.get("rank", ""),
            row["trial"],
            row["status"],
            "" if row["score"] is None else row["score"],
            row["epochs"] or "",
            row["seconds"] or "",
        ]
        + [row["hyperparameters"].get(p, "") for p in paths]
        for row in rows
    ]
    text = io.StringIO(newline="")
    csv.writer(text).writerows(lines)
    rundir.write_text_atomic(search_dir / "leaderboard.csv", text.getvalue())
    rundir.write_json_atomic(
        search_dir / "leaderboard.json",
        {
            "objective": objective,
            "direction": OBJECTIVES[objective],
            "trials": rows,
        },
    )


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _short_names(paths):
    """`model.options.num_stages` -> `num_stages`, `optimizer.name` -> `optimizer`; the whole
    path where two would read the same."""
    lasts = [p.split(".")[-2] if p.endswith(".name") else p.rsplit(".", 1)[-1] for p in paths]
    return [last if lasts.count(last) == 1 else path for path, last in zip(paths, lasts)]


def format_leaderboard(rows, objective) -> str:
    paths = _columns(rows)
    header = ["rank", "trial", "status", objective, "epochs", "seconds"] + _short_names(paths)
    table = [header] + [
        [
            str(row.get("rank", "-")),
            row["trial"],
            row["status"],
            _format_value(row["score"]),
            _format_value(row["epochs"]),
            _format_value(row["seconds"]),
        ]
        + [_format_value(row["hyperparameters"].get(p)) for p in paths]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table
    )


def live_line(row) -> str:
    values = " ".join(
        f"{name}={_format_value(row['hyperparameters'][path])}"
        for name, path in zip(_short_names(list(row["hyperparameters"])), row["hyperparameters"])
    )
    return (
        f"trial {row['trial']} {row['status'].lower()}: score {_format_value(row['score'])}, "
        f"{_format_value(row['epochs'])} epochs, {_format_value(row['seconds'])} s | {values}"
    )


def plot_trials(rows, space, objective, path):
    """The objective per trial (with the best so far), and against each numeric hyperparameter."""
    # A bare Figure (Agg rendering, no pyplot), as training.plots draws: no global backend.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scored = sorted((r for r in rows if r["score"] is not None), key=lambda r: int(r["trial"]))
    numeric = [
        p
        for p, entry in space.items()
        if spaces.is_numeric(entry) and any(p in r["hyperparameters"] for r in scored)
    ]
    panels = 1 + len(numeric)
    columns = min(panels, 3)
    lines = -(-panels // columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * lines), dpi=100)
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    better = max if OBJECTIVES[objective] == "max" else min
    numbers = [int(r["trial"]) for r in scored]
    scores = [r["score"] for r in scored]
    axes[0].plot(numbers, scores, "o", label="trial")
    axes[0].step(
        numbers,
        [better(scores[: i + 1]) for i in range(len(scores))],
        where="post",
        label="best so far",
    )
    axes[0].set(title=f"{objective} per trial", xlabel="trial", ylabel=objective)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize="small")
    for axis, hp_path in zip(axes[1:], numeric):
        points = [
            (r["hyperparameters"][hp_path], r["score"])
            for r in scored
            if hp_path in r["hyperparameters"]
        ]
        axis.plot([x for x, _ in points], [y for _, y in points], "o")
        if space[hp_path].get("sampling") == "log":
            axis.set_xscale("log")
        elif space[hp_path]["type"] != "float":
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set(title=hp_path, xlabel=hp_path.rsplit(".", 1)[-1], ylabel=objective)
    for axis in axes[panels:]:
        axis.set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    rundir.write_bytes_atomic(path, buffer.getvalue())

"""Where a run lands, whether it resumes, and writing its files so a kill never leaves half of one.

A run lives in `<output_dir>/<run-name>/`. It is *finished* when it holds the marker file
`.finished` (written last, by `mark_finished`, after the export and metrics.json); a directory
without the marker that holds a finished epoch (the history or the backup the callbacks write at
each epoch end) is an *interrupted* run, which the same command resumes. A directory with
neither (e.g. only the config.yaml of a run that failed before its first epoch ended) holds
nothing to resume: any new run takes it over.

    run = resolve_run_dir("saved_models", default_name="lenet5-digits")
    ...  # train, resuming when run.resume, export into run.path
    mark_finished(run.path)
"""

import dataclasses
import datetime
import json
import os
import pathlib
import re
import secrets
import shutil
import tempfile

from training import checks

FINISHED_MARKER = ".finished"
# What training.callbacks writes at the end of every epoch (the backup is gone once fit ends).
HISTORY_CSV = "history.csv"
BACKUP_DIR = "backup"
# Keeps a directory name well inside every filesystem's 255-byte limit, suffixes included.
MAX_NAME_LENGTH = 100
_SEPARATORS_KEPT = {"-", "_", "."}


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: pathlib.Path
    resume: bool
    name: str


def sanitize_run_name(name):
    """A safe directory name from free text such as `lenet5-../data/flowers`.

    Runs of characters other than letters and digits become one `_`, unless the run is a single
    `-`, `_` or `.`: `lenet5-../data/flowers` -> `lenet5_data_flowers`, `lenet5-x.npz` stays.
    """
    safe = re.sub(
        r"[^A-Za-z0-9]+",
        lambda match: match.group() if match.group() in _SEPARATORS_KEPT else "_",
        str(name),
    )
    safe = safe[:MAX_NAME_LENGTH].strip("-_.")
    checks.require(safe, f"run name {name!r} has no letters or digits to name a directory with.")
    return safe


def is_finished(path):
    return (pathlib.Path(path) / FINISHED_MARKER).is_file()


def has_finished_epoch(path):
    path = pathlib.Path(path)
    return (path / HISTORY_CSV).is_file() or (path / BACKUP_DIR).is_dir()


def check_output(output_dir, run_name=None):
    """Refuse an output_dir that is a file and a run_name that is not a plain directory name."""
    output_dir = pathlib.Path(output_dir)
    checks.require(
        not output_dir.exists() or output_dir.is_dir(),
        f"output.output_dir {str(output_dir)!r} is a file; it must be a directory or not exist.",
    )
    if run_name is not None:
        safe = sanitize_run_name(run_name)
        checks.require(
            safe == str(run_name),
            f"output.run_name {str(run_name)!r} is not a plain directory name; use letters, "
            f"digits and single '-', '_' or '.' between them, e.g. {safe!r}.",
        )


def check_config(config):
    check_output(config.output.output_dir, config.output.run_name)


def resolve_run_dir(output_dir, run_name=None, *, default_name, overwrite=False):
    """Pick (and create) the directory of a run.

    The name is `run_name`, or `default_name` made safe by `sanitize_run_name`. Then:
    - no directory, or one without a finished epoch (see the module's docstring): a new run;
    - an interrupted run (no `.finished` marker): resumed (`resume=True`), also with `overwrite`,
      since only the marker proves the directory is a run this trainer may delete;
    - a finished run: with `overwrite` it is deleted and the run starts fresh; without, the run
      goes to the first free or interrupted `name-2`, `name-3`, ... and the finished run is kept.
    """
    check_output(output_dir, run_name)
    output_dir = pathlib.Path(output_dir)
    name = sanitize_run_name(default_name) if run_name is None else str(run_name)
    candidate, suffix = name, 1
    while True:
        path = output_dir / candidate
        checks.require(
            not path.exists() or path.is_dir(),
            f"run directory {str(path)!r} is a file; choose another run_name.",
        )
        if is_finished(path):
            if overwrite:
                _remove_whole(path)
                path.mkdir(parents=True)
                return RunDir(path=path, resume=False, name=candidate)
            suffix += 1
            candidate = f"{name}-{suffix}"
            continue
        path.mkdir(parents=True, exist_ok=True)
        return RunDir(path=path, resume=has_finished_epoch(path), name=candidate)


def mark_finished(path):
    """Write the `.finished` marker: the last file of a complete run."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(pathlib.Path(path) / FINISHED_MARKER, {"finished_at": stamp})


def write_bytes_atomic(path, data):
    """Write `data` to a temporary file beside `path`, then rename it over `path` in one step."""
    path = pathlib.Path(path)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    # os.open rather than mkstemp: mode 0o666 minus the umask, as for any file the user writes,
    # where mkstemp would leave the final file readable by its owner only.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, data):
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _remove_whole(path):
    # Renamed away first, so a kill during the slow delete leaves no half-deleted run that the
    # next command would take for an interrupted one and resume.
    doomed = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.deleting-"))
    os.replace(path, doomed / path.name)
    shutil.rmtree(doomed)

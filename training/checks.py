"""The checks every module that owns a setting uses to refuse a bad value.

Convention: a module that owns settings (its valid names, its ranges) exposes
`check_config(config)`, which raises `ConfigError` naming what was received and what is
allowed. `TrainConfig.validate()` runs them all, before any data is read or any file written.
A library function that is public API guards its own arguments with the same helpers the
module's `check_config` calls, so each rule is written once.
"""

import difflib
import numbers


class ConfigError(ValueError):
    """A setting that cannot work; the message says what was received and what is allowed."""


def require(condition, message):
    if not condition:
        raise ConfigError(message)


def one_of(what, value, allowed):
    """Refuse `value` unless it is in `allowed`, suggesting the closest valid name."""
    allowed = [str(name) for name in allowed]
    if str(value) not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Unknown {what} {value!r}.{hint} Valid: {', '.join(allowed)}.")


def in_range(what, value, low=None, high=None, *, low_open=False, high_open=True, integer=False):
    """Refuse a `value` outside [low, high) (open or closed at either end, either end optional):
    `in_range("momentum", m, 0, 1)` says "momentum must be in [0, 1), got 1.5."."""
    kind = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, kind) and not isinstance(value, bool)
    if valid and low is not None:
        valid = value > low if low_open else value >= low
    if valid and high is not None:
        valid = value < high if high_open else value <= high
    if valid:
        return
    if low is not None and high is not None:
        bounds = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f"{'>' if low_open else '>='} {low}"
    else:
        bounds = f"{'<' if high_open else '<='} {high}"
    raise ConfigError(f"{what} must be {'an integer ' if integer else ''}{bounds}, got {value!r}.")

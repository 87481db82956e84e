"""The two checks every module that owns a setting uses to refuse a bad value.

Convention: a module that owns settings (its valid names, its ranges) exposes
`check_config(config)`, which raises `ConfigError` naming what was received and what is
allowed. `TrainConfig.validate()` runs them all, before any data is read or any file written.
"""

import difflib


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

"""Settings read for a process: :class:`stream.config.Settings` from keyword arguments, the
environment and a TOML file, with one clear line for a bad or unknown setting (never its value:
it may be a secret)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream.config import CONFIG_ENV_VAR, ENV_PREFIX, NOT_SETTINGS, Settings

__all__ = ["load_settings", "unknown_env_vars"]


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, raising :class:`stream.errors.ConfigError` with one clear line."""
    from pydantic import ValidationError

    from stream.errors import ConfigError

    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        os.environ[CONFIG_ENV_VAR] = str(path)
    unknown = unknown_env_vars(os.environ)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (not an mlstream setting; see README \"Settings\")")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        # input values are left out on purpose: they may be secrets
        raise ConfigError(f"bad setting {_where(loc, overrides)}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read settings: {exc}") from None


def _where(loc: list[str], overrides: dict[str, Any]) -> str:
    """Name a setting as the user wrote it: dotted name, then the environment variable or the
    config file that set it.

    >>> _where(["scoring", "max_batch_size"], {"scoring": {}})
    'scoring.max_batch_size'
    """
    dotted = ".".join(loc)
    if loc and loc[0] in overrides:
        return dotted
    env = ENV_PREFIX + "__".join(loc).upper()
    if env in os.environ:
        return f"{dotted} ({env})"
    config_file = os.environ.get(CONFIG_ENV_VAR)
    return f"{dotted} (in {config_file})" if config_file else dotted


def unknown_env_vars(environ: Mapping[str, str]) -> list[str]:
    """``MLSTREAM_*`` variables that name no setting, so a typo is an error, not a default.

    >>> unknown_env_vars({"MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": "k:9092", "MLSTREAM_LOG_LEVL": "DEBUG",
    ...                   "MLSTREAM_CONFIG": "x.toml", "HOME": "/root"})
    ['MLSTREAM_LOG_LEVL']
    >>> unknown_env_vars({"MLSTREAM_SCORING__MAX_BATCH": "10"})
    ['MLSTREAM_SCORING__MAX_BATCH']
    """
    bad = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        model: Any = Settings
        for part in path:
            fields = getattr(model, "model_fields", None)
            if fields is None or part not in fields:
                bad.append(name)
                break
            model = fields[part].annotation
    return bad

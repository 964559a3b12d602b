"""One precedence for every resource setting: built-in default < env var < launch-time config.

Each layer overrides only the keys it sets. Env vars follow one rule, `WSOVVIS_<FIELD_UPPER>`
(a resource may keep older names in `ENV_ALIASES`), so a new field gets its env var with no
extra code. The env layer is applied with `configure_at_launch`: Dagster 1.13.28 *replaces* a
constructed resource's whole config when run config names any of its keys (verified in
tests/resources/test_settings.py), while a partial resource keeps its values as per-key defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import TypeAdapter, ValidationError

from wsovvis_dagster.errors import WsovvisError
from wsovvis_instance.dagster_private import PartialResource

ENV_PREFIX = "WSOVVIS_"

# where a setting's value came from, lowest first
DEFAULT, CODE, ENV, LAUNCH = "default", "code", "env", "launch"


class SettingsError(WsovvisError, ValueError):
    """An env var or launch-time setting that cannot be used as given."""


def env_var_name(cls: type[ConfigurableResource], field: str) -> str:
    """The env var of `cls.field`: an alias kept for compatibility, else WSOVVIS_<FIELD>."""
    return getattr(cls, "ENV_ALIASES", {}).get(field) or f"{ENV_PREFIX}{field.upper()}"


def env_values(cls: type[ConfigurableResource], env: Mapping[str, str]) -> dict[str, Any]:
    """The fields of `cls` whose env var is set (non-empty), parsed to the field's type."""
    values, problems = {}, []
    for name, info in cls.model_fields.items():
        var = env_var_name(cls, name)
        if env.get(var, "") == "":
            continue
        try:  # the field's own type and constraints (e.g. a pattern)
            kind = (Annotated[(info.annotation, *info.metadata)] if info.metadata
                    else info.annotation)
            values[name] = TypeAdapter(kind).validate_python(env[var])
        except ValidationError as exc:
            problems.append(f"{var}={env[var]!r}: {exc.errors()[0]['msg']}")
    if problems:
        raise SettingsError(f"{cls.__name__}: bad env var value ({'; '.join(problems)})")
    return values


def resolved(cls: type[ConfigurableResource], env: Mapping[str, str],
             defaults: Mapping[str, Any] | None = None) -> ConfigurableResource:
    """The concrete resource that defaults < env give (no launch config): used at load time,
    e.g. for mask_pngs' code version."""
    return cls(**{**(defaults or {}), **env_values(cls, env)})


def configured(cls: type[ConfigurableResource], env: Mapping[str, str],
               defaults: Mapping[str, Any] | None = None) -> PartialResource:
    """`cls` with defaults < env as per-key defaults; launch-time config overrides key by key."""
    return cls.configure_at_launch(**{**(defaults or {}), **env_values(cls, env)})


def launch_keys(context: InitResourceContext | None, resource_key: str) -> set[str]:
    """The keys of `resource_key` that this run's launch-time config sets."""
    run = context.run if context else None
    config = (run.run_config if run else None) or {}
    section = ((config.get("resources") or {}).get(resource_key) or {}).get("config") or {}
    return set(section)


def setting_sources(resource: ConfigurableResource, env: Mapping[str, str],
                    launched: set[str]) -> dict[str, str]:
    """Which layer set each field's value: launch, env (with the var's name), code or default."""
    cls = type(resource)
    from_env = env_values(cls, env)
    sources = {}
    for name, info in cls.model_fields.items():
        value = getattr(resource, name)
        if name in launched:
            sources[name] = LAUNCH
        elif name in from_env and from_env[name] == value:
            sources[name] = f"{ENV} {env_var_name(cls, name)}"
        elif info.default == value:
            sources[name] = DEFAULT
        else:
            sources[name] = CODE  # set where the resource was constructed (tests, scripts)
    return sources


def configured_value(cls: type[ConfigurableResource], env: Mapping[str, str], name: str) -> Any:
    """What `name` would be without launch-time config: its env value, else the default."""
    from_env = env_values(cls, env)
    return from_env[name] if name in from_env else cls.model_fields[name].default

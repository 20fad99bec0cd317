"""A run's settings: the config file's sections merged with the run's Params, validated by the models.

Everything is checked here, before the DAG's first AWS call, so bad input fails the run in
seconds with a message naming the key and the value instead of leaving a builder behind.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ml_cache.images import InvalidInputs, show
from ml_cache.settings.models import BuildConfig, BuildSettings, JanitorSettings, RolloutSettings

CONFIG_SECTIONS = ("pipeline", "aws", "build", "rollout", "timeouts", "lifecycle", "prices", "notifications")
# Form fields: every BuildConfig field but the allow-list (an allow-list a run can widen is no allow-list).
BUILD_FORM_FIELDS = tuple(name for name in BuildConfig.model_fields if name != "allowed_registries")
ROLLOUT_FORM_FIELDS = ("snapshot_id", "max_startup_seconds", "force_update", "uncached_baseline")
JANITOR_FORM_FIELDS = ("dry_run",)

Settings = TypeVar("Settings", bound=BaseModel)


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # our own validators name the value already
        return f"{where}: {message}" if where else message
    return f"{where}: {message} (got {show(error['input'])})"


def validated(model: type[Settings], data: dict[str, Any]) -> Settings:
    """`model` from `data`, or InvalidInputs listing every problem with its key."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidInputs("; ".join(_describe(e) for e in error.errors(include_url=False))) from None


def trigger_conf() -> dict[str, Any]:
    """The running task's dag_run.conf as triggered, {} outside a task. Its keys reach the task's params
    only while core.dag_run_conf_overrides_params is on: read here, a typo is refused either way."""
    from airflow.sdk import get_current_context

    try:
        dag_run = get_current_context().get("dag_run")
    except RuntimeError:  # not in a task: a test or a script
        return {}
    conf = getattr(dag_run, "conf", None)
    return dict(conf) if isinstance(conf, dict) else {}


def form_defaults() -> dict[str, Any]:
    """The running DAG's Param defaults as this process parsed them, {} outside a task."""
    from airflow.sdk import get_current_context

    try:
        dag = get_current_context().get("dag")
    except RuntimeError:  # not in a task: a test or a script
        return {}
    params = getattr(dag, "params", None) or {}
    return {name: params.get_param(name).value for name in params} if hasattr(params, "get_param") else {}


def overrides(params: dict[str, Any], conf: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The params a run sets: non-empty, and submitted (in the trigger's conf) or unlike the form's default.
    A form field shows the config's value at parse time (settings.params); left as it is and not submitted,
    it is no override, so the config read now wins over a form parsed before the file changed."""
    return {key: value for key, value in params.items()
            if value is not None and (key in conf or key not in defaults or value != defaults[key])}


def refuse_unknown_keys(keys: Iterable[str], form_fields: tuple[str, ...]) -> None:
    """InvalidInputs naming each key that is no field of the form, with the closest one: a typo such as
    `image` for `images` would otherwise build and roll out the config's default set."""
    unknown = sorted(set(keys) - set(form_fields))
    if not unknown:
        return
    hints = [f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, form_fields, n=1))
             else repr(key) for key in unknown]
    raise InvalidInputs(f"unknown parameter(s) {unknown}: {', '.join(hints)}; the form has {list(form_fields)}")


def _merged(config: dict[str, Any], section: str, params: dict[str, Any] | None,
            form_fields: tuple[str, ...], conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """The section with every non-empty Param laid over it; unknown keys of the params or of the run's
    conf (default: the running task's, see trigger_conf) are errors naming the key."""
    if not isinstance(config, dict):
        raise InvalidInputs(f"config must be a mapping, got {show(config)}")
    unknown_sections = sorted(set(config) - set(CONFIG_SECTIONS))
    if unknown_sections:
        raise InvalidInputs(f"config has unknown section(s) {unknown_sections}; known: {list(CONFIG_SECTIONS)}")
    params = params or {}
    if not isinstance(params, dict):
        raise InvalidInputs(f"params must be a mapping, got {show(params)}")
    conf = trigger_conf() if conf is None else conf
    if params.get("allowed_registries") is not None or "allowed_registries" in conf:
        raise InvalidInputs("allowed_registries cannot be overridden per run; change the config file")
    refuse_unknown_keys([*params, *conf], form_fields)
    base = config.get(section)
    if not isinstance(base, dict):
        raise InvalidInputs(f"config has no `{section}:` mapping")
    return {**base, **overrides(params, conf, form_defaults())}


def _common(config: dict[str, Any], region: str) -> dict[str, Any]:
    return {"pipeline": config.get("pipeline"), "region": region, "aws": config.get("aws"),
            "timeouts": config.get("timeouts") or {}, "lifecycle": config.get("lifecycle") or {},
            "prices": config.get("prices") or {}, "notifications": config.get("notifications") or {}}


def resolve_build_settings(config: dict[str, Any], params: dict[str, Any] | None, *, region: str,
                           conf: dict[str, Any] | None = None) -> BuildSettings:
    """Config `build:` with the run's Params over it (None = the config's value), validated; `conf`: the
    trigger's keys (default: the running task's dag_run.conf)."""
    build = _merged(config, "build", params, BUILD_FORM_FIELDS, conf)
    return validated(BuildSettings, {**_common(config, region), "build": build})


def resolve_rollout_settings(config: dict[str, Any], params: dict[str, Any] | None, *,
                             region: str, conf: dict[str, Any] | None = None) -> RolloutSettings:
    """Config `rollout:` (Terraform's output) with the run's Params over it, validated; `conf` as for a build."""
    rollout = _merged(config, "rollout", params, ROLLOUT_FORM_FIELDS, conf)
    return validated(RolloutSettings, {**_common(config, region), "rollout": rollout})


def resolve_janitor_settings(config: dict[str, Any], params: dict[str, Any] | None, *,
                             region: str) -> JanitorSettings:
    """Config `lifecycle:` and `rollout:` (where the cache is live) with the run's `dry_run`, validated."""
    params = params or {}
    if not isinstance(params, dict):
        raise InvalidInputs(f"params must be a mapping, got {show(params)}")
    refuse_unknown_keys([*params, *trigger_conf()], JANITOR_FORM_FIELDS)
    rollout = _merged(config, "rollout", {}, (), {})
    data = {**_common(config, region), "rollout": rollout}
    if params.get("dry_run") is not None:
        data["dry_run"] = params["dry_run"]
    return validated(JanitorSettings, data)

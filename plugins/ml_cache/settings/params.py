"""Trigger-form Params generated from the settings models: the form shows the model's limits.

Each field is optional in the form (null = keep the config file's value), so the JSON schema of
the model's field becomes `["null", <type>]` and its enum gains `null`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param
from pydantic import BaseModel

from ml_cache.settings.models import BuildConfig, RolloutConfig
from ml_cache.settings.resolve import BUILD_FORM_FIELDS, ROLLOUT_FORM_FIELDS

_NOT_FOR_THE_FORM = ("title", "default", "description")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    choices = [s for s in schema.pop("anyOf", [schema]) if s.get("type") != "null"]
    schema = {**schema, **choices[0]}
    if "enum" in schema:
        schema["enum"] = [None, *schema["enum"]]
    schema["type"] = ["null", schema["type"]]
    return schema


def form_params(model: type[BaseModel], names: tuple[str, ...]) -> dict[str, Param]:
    """One Param per field in `names`, constrained exactly like the model's field."""
    properties = model.model_json_schema()["properties"]
    params = {}
    for name in names:
        field = properties[name]
        schema = _nullable({key: value for key, value in field.items() if key not in _NOT_FOR_THE_FORM})
        description = (field.get("description") or name.replace("_", " ").capitalize() + ".")
        params[name] = Param(None, description=f"{description} Empty: config default.", **schema)
    return params


def build_params() -> dict[str, Param]:
    """The build DAG's trigger form."""
    return form_params(BuildConfig, BUILD_FORM_FIELDS)


def rollout_params() -> dict[str, Param]:
    """The rollout DAG's trigger form."""
    return form_params(RolloutConfig, ROLLOUT_FORM_FIELDS)

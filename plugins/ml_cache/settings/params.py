"""Trigger-form Params generated from the settings models: the form shows the model's limits and, in
every field, the value a run would use: the config file's, else the schema's default.

Reading the config when the DAG is parsed is one small YAML file and a pydantic check of one section,
no network, cached per file version (path, mtime, size), as the run timeout already does
(ml_cache.run_deadline): well within "no heavy work at import". The run still reads the file when it
starts: a field whose value is the form's default and was not submitted (a scheduled run, an API
trigger naming a few fields) takes the config's value at that time (settings.resolve), so an edited
config is never overridden by the form of an older parse. A config that does not read or validate
leaves the fields empty (empty = the config's value at run time) and says why in each description;
`validate_inputs` then names the error. The published image set needs AWS, so it is not read here: the
images field's description (Markdown) holds an image of it that the ML cache plugin serves
(`ml-cache/published.svg`, plugins/ml_cache/ui): the browser fetches it when the form opens, with the
user's own session, from the SSM metadata parameter at that moment.

JSON schema types keep `null` (an API caller's explicit null still means "the config's value"), but
enums do not list it: the form never offers `null`.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from airflow.sdk import Param
from pydantic import BaseModel

from ml_cache.images import InvalidInputs
from ml_cache.settings.config import config_path, load_config
from ml_cache.settings.models import BuildConfig, RolloutConfig
from ml_cache.settings.resolve import BUILD_FORM_FIELDS, ROLLOUT_FORM_FIELDS, validated
from ml_cache.ui.paths import PUBLISHED_CARD, relative

_NOT_FOR_THE_FORM = ("title", "default", "description")

# The form's sections, in order, and each field's title: every form field has a place (checked below).
BUILD_SECTIONS: dict[str, dict[str, str]] = {
    "Images": {"images": "Images to cache", "architecture": "Architecture (of the GPU nodes)"},
    "Builder": {"instance_types": "Builder instance types", "kubernetes_version": "Kubernetes version (builder AMI)",
                "pull_parallelism": "Images unpacked at once", "incremental": "Incremental build",
                "force_rebuild": "Force a rebuild"},
    "Volume": {"volume_size_gib": "Data volume size (GiB)", "volume_iops": "Data volume IOPS (gp3)",
               "volume_throughput_mibps": "Data volume throughput (MiB/s, gp3)", "snapshot_name": "Snapshot name",
               "snapshot_description": "Snapshot description"},
    "FSR": {"enable_fast_snapshot_restore": "Fast Snapshot Restore",
            "fsr_availability_zones": "FSR availability zones"},
}
ROLLOUT_SECTIONS: dict[str, dict[str, str]] = {
    "Rollout": {"snapshot_id": "Snapshot to roll out", "max_startup_seconds": "Start-up threshold (s)",
                "force_update": "Force the node group update", "uncached_baseline": "Uncached baseline"},
}
def _placed(sections: dict[str, dict[str, str]], fields: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    placed = {name: (section, title) for section, titles in sections.items() for name, title in titles.items()}
    if sorted(placed) != sorted(fields):
        raise RuntimeError(f"form sections {sorted(placed)} differ from the form fields {sorted(fields)}")
    return placed


def _form_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The field's schema, `null` allowed by type (an explicit null = the config's value) but never an enum choice."""
    choices = [s for s in schema.pop("anyOf", [schema]) if s.get("type") != "null"]
    schema = {**schema, **choices[0]}
    if "enum" not in schema:
        schema["type"] = ["null", schema["type"]]
    return schema


def shown(value: Any) -> str:
    """A default as the description says it: lists comma-separated, switches on/off, None as empty."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "empty" if value is None else str(value)


@functools.lru_cache(maxsize=8)
def _section_defaults(model: type[BaseModel], section: str, path: str, version: tuple[int, int]
                      ) -> tuple[dict[str, Any] | None, str]:
    """({field: value a run would use}, "") from the config file's `section`, or (None, why not)."""
    try:
        config = load_config(path)
        values = validated(model, config.get(section) or {}).model_dump(mode="json")
    except InvalidInputs as error:
        return None, str(error)
    return values, ""


def configured_defaults(model: type[BaseModel], section: str) -> tuple[dict[str, Any] | None, str]:
    """The config file's `section` as validated values, read once per file version; (None, why) on error."""
    path = config_path()
    try:
        stat = os.stat(str(path))
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError as error:
        return None, f"cannot read the config file {str(path)!r}: {error.strerror or error}"
    return _section_defaults(model, section, str(path), version)


def markdown_text(text: str) -> str:
    """Plain text as Markdown that renders as the same text (every punctuation mark escaped)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)


def form_params(model: type[BaseModel], section: str, sections: dict[str, dict[str, str]],
                fields: tuple[str, ...], context: dict[str, str] | None = None,
                markdown: dict[str, str] | None = None) -> dict[str, Param]:
    """One Param per field, in section order, constrained exactly like the model's field, holding the configured
    value; `context` adds read-only facts to a field's description, `markdown` Markdown after it (the
    description is then Markdown: the form shows `description_md` only where there is no plain one)."""
    properties = model.model_json_schema()["properties"]
    placed = _placed(sections, fields)
    defaults, problem = configured_defaults(model, section)
    params = {}
    for name in (name for titles in sections.values() for name in titles):
        field = properties[name]
        schema = _form_schema({key: value for key, value in field.items() if key not in _NOT_FOR_THE_FORM})
        text = [field.get("description") or name.replace("_", " ").capitalize() + ".", (context or {}).get(name, "")]
        if defaults is None:
            text.append(f"Empty: the config's value when the run starts (it could not be shown: {problem}).")
            value = None
        else:
            value = defaults[name]
            text.append(f"Default: {shown(value)}.")
        section_name, title = placed[name]
        description = " ".join(part for part in text if part)
        if name in (markdown or {}):
            described = {"description_md": f"{markdown_text(description)}\n\n{markdown[name]}"}
        else:
            described = {"description": description}
        params[name] = Param(value, title=title, section=section_name, **described, **schema)
    return params


def build_params() -> dict[str, Param]:
    """The build DAG's trigger form: Images, Builder, Volume, FSR; the allow-list shown with the images."""
    defaults, _ = configured_defaults(BuildConfig, "build")
    context = {}
    if defaults is not None:
        context["images"] = (f"Allowed registries (config file only, not changeable per run): "
                             f"{', '.join(defaults['allowed_registries'])}.")
    published = (f"![The published image set]({relative(PUBLISHED_CARD)})\n\n"
                 "History, digests and start-up times: **ML cache** in the navigation.")
    return form_params(BuildConfig, "build", BUILD_SECTIONS, BUILD_FORM_FIELDS, context, {"images": published})


def rollout_params() -> dict[str, Param]:
    """The rollout DAG's trigger form."""
    return form_params(RolloutConfig, "rollout", ROLLOUT_SECTIONS, ROLLOUT_FORM_FIELDS)

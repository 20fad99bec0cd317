"""The builder spec: what Airflow asks build_cache.sh to do, checked against the one schema.

scripts/build_spec.schema.json is the single definition of the spec (and of the registry
credential shape); the builder checks the same file again before it touches the volume.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from ml_cache.images import InvalidInputs, show

SCHEMA_PATH = Path(__file__).resolve().parent / "scripts" / "build_spec.schema.json"


@cache
def spec_schema() -> dict[str, Any]:
    """The shipped schema (read once, on first use: nothing heavy at DAG parse time)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


def _validator(subschema: dict[str, Any]) -> Draft202012Validator:
    """A validator for part of the schema; its $refs still resolve against the whole file."""
    return Draft202012Validator({**subschema, "$defs": spec_schema()["$defs"]})


def _where(root: str, path: Iterable[object]) -> str:
    return root + "".join(f"[{part}]" if isinstance(part, int) else f"[{part!r}]" for part in path)


def _problem(error: ValidationError) -> str:
    if error.validator == "pattern":
        return f"{show(error.instance)} is not {error.schema.get('title', 'matching ' + str(error.validator_value))}"
    if error.validator == "oneOf":
        return f"{show(error.instance)} matches none of the allowed shapes"
    return error.message


def build_spec(
    action: str,
    *,
    images: list[str],
    platform: str,
    volume_id: str,
    parallel: int | None,
    registry_credentials: dict[str, dict[str, str]],
    registry_endpoints: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The spec for one run of build_cache.sh; raises InvalidInputs naming the path and the value.
    `images` are pinned by digest; both mappings are keyed by the exact hosts of those images. `parallel`
    None leaves it out: the builder then unpacks as many images at once as it has vCPUs."""
    spec = {
        "action": action,
        "images": copy.deepcopy(images),
        "platform": platform,
        "volume_id": volume_id,
        "parallel": parallel,
        "registry_credentials": copy.deepcopy(registry_credentials),
        "registry_endpoints": copy.deepcopy(registry_endpoints or {}),
    }
    if parallel is None:
        del spec["parallel"]
    error = best_match(Draft202012Validator(spec_schema()).iter_errors(spec))
    if error is not None:
        raise InvalidInputs(f"builder {_where('spec', error.absolute_path)}: {_problem(error)}")
    return spec


def encode_spec(spec: dict[str, Any]) -> str:
    """The spec as one base64 token: data that cannot be read as shell text."""
    return base64.b64encode(json.dumps(spec, sort_keys=True).encode()).decode("ascii")


def credential_shapes() -> list[str]:
    """The credential sources the builder implements, as readable examples."""
    shapes = []
    for choice in spec_schema()["$defs"]["credential"]["oneOf"]:
        source = spec_schema()["$defs"][choice["$ref"].rsplit("/", 1)[1]]
        shapes.append(json.dumps({key: value["enum"][0] if "enum" in value else f"<{value.get('title', key)}>"
                                  for key, value in source["properties"].items()}))
    return shapes


def validate_registry_credentials(value: object) -> dict[str, dict[str, str]]:
    """A config's registry_credentials (keys: hosts or host patterns) checked against the schema's
    credential definition; the error names the registry and the problem."""
    if not isinstance(value, dict):
        raise InvalidInputs(f"registry_credentials must be a mapping of registry host to credential source, "
                            f"got {show(value)}")
    subschema = {**spec_schema()["properties"]["registry_credentials"],
                 "propertyNames": {"$ref": "#/$defs/registry_host_pattern"}}
    error = best_match(_validator(subschema).iter_errors(value))
    if error is None:
        return copy.deepcopy(value)
    if not error.absolute_path:  # propertyNames: the host itself
        raise InvalidInputs(f"registry_credentials: registry {_problem(error)}")
    if error.validator == "oneOf" and isinstance(error.instance, dict) and "source" in error.instance:
        shape = next((s for s in credential_shapes() if f'"source": {json.dumps(error.instance["source"])}' in s), None)
        if shape:  # a known source with wrong keys: show that source's shape only
            raise InvalidInputs(f"{_where('registry_credentials', error.absolute_path)}: {show(error.instance)} is "
                                f"not a {error.instance['source']} credential; write it as {shape}")
    raise InvalidInputs(f"{_where('registry_credentials', error.absolute_path)}: {_problem(error)}; "
                        f"a credential is one of {', '.join(credential_shapes())}")


def validate_registry_endpoints(value: object) -> dict[str, str]:
    """A config's registry_endpoints checked against the schema, hosts lower-cased as image refs' are
    (DNS names are case-insensitive); the error names the host."""
    error = best_match(_validator(spec_schema()["properties"]["registry_endpoints"]).iter_errors(value))
    if error is None:
        endpoints: dict[str, str] = {}
        for host, url in value.items():  # type: ignore[union-attr]
            if host.lower() in endpoints:
                raise InvalidInputs(f"registry_endpoints names {host.lower()!r} twice (spelled {host!r} too)")
            endpoints[host.lower()] = url
        return endpoints
    if not error.absolute_path:
        raise InvalidInputs(f"registry_endpoints: {_problem(error)}")
    raise InvalidInputs(f"{_where('registry_endpoints', error.absolute_path)}: {_problem(error)}")


def validate_image_refs(refs: list[str]) -> list[str]:
    """Refs checked against the builder's own grammar, so what the builder would refuse fails before
    any instance is launched (images.py accepts a few it cannot pull: IPv6 hosts, long ports...)."""
    error = best_match(_validator({"type": "array", "items": {"$ref": "#/$defs/image_ref"}}).iter_errors(refs))
    if error is not None:
        raise InvalidInputs(f"{_where('images', error.absolute_path)}: {_problem(error)} (the builder cannot pull it)")
    return refs

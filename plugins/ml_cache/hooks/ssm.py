"""SSM calls of the cache pipeline: parameters and the build document (the agent-online wait is a JSON waiter)."""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.ssm import SsmHook

from ml_cache.hooks._waiters import CustomWaitersMixin


class CacheSsmHook(CustomWaitersMixin, SsmHook):
    """The provider's SsmHook plus the `agent_online` waiter and the document/parameter calls we need."""

    def get_parameter(self, name: str) -> dict[str, Any] | None:
        """The parameter (Value, Version, LastModifiedDate), or None when it does not exist."""
        try:
            return self.conn.get_parameter(Name=name)["Parameter"]
        except self.conn.exceptions.ParameterNotFound:
            return None

    def put_parameter(self, name: str, value: str, *, description: str = "", tier: str = "Standard") -> int:
        """Overwrite `name` with `value` (a String); returns the new version."""
        response = self.conn.put_parameter(
            Name=name, Value=value, Type="String", Overwrite=True, Description=description, Tier=tier
        )
        return response["Version"]

    def describe_document(self, name: str) -> dict[str, Any] | None:
        try:
            return self.conn.describe_document(Name=name)["Document"]
        except self.conn.exceptions.InvalidDocument:
            return None

    def get_document_content(self, name: str, version: str) -> str:
        return self.conn.get_document(Name=name, DocumentVersion=version, DocumentFormat="JSON")["Content"]

    def create_document(self, name: str, content: str, tags: dict[str, str]) -> dict[str, Any]:
        return self.conn.create_document(
            Name=name,
            Content=content,
            DocumentType="Command",
            DocumentFormat="JSON",
            Tags=[{"Key": key, "Value": value} for key, value in sorted(tags.items())],
        )["DocumentDescription"]

    def update_document(self, name: str, content: str) -> dict[str, Any]:
        return self.conn.update_document(
            Name=name, Content=content, DocumentVersion="$LATEST", DocumentFormat="JSON"
        )["DocumentDescription"]

    def set_default_document_version(self, name: str, version: str) -> None:
        self.conn.update_document_default_version(Name=name, DocumentVersion=version)

    def get_parameter_history(self, name: str) -> list[dict[str, Any]]:
        """Every stored version of `name` (Value, Version, LastModifiedDate), oldest first; [] when absent."""
        paginator = self.conn.get_paginator("get_parameter_history")
        try:
            return [item for page in paginator.paginate(Name=name) for item in page["Parameters"]]
        except self.conn.exceptions.ParameterNotFound:
            return []

    def list_document_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of document `name` (DocumentVersion, IsDefaultVersion, CreatedDate); [] when absent."""
        paginator = self.conn.get_paginator("list_document_versions")
        try:
            return [item for page in paginator.paginate(Name=name) for item in page["DocumentVersions"]]
        except self.conn.exceptions.InvalidDocument:
            return []

    def delete_document_version(self, name: str, version: str) -> None:
        """DeleteDocument of one version (AWS refuses the default version)."""
        self.conn.delete_document(Name=name, DocumentVersion=version)

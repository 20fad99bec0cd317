"""`EarlierResult`: a task argument that reads an earlier task's XCom when the task renders, drawing no edge.

Some results travel far: the validated settings (`validate_inputs`) and the builder
(`wait_for_builder`) are read by most later tasks. Passing their XComArgs would draw an edge from
each producer to every consumer, and the graph view would show bundles of parallel edges instead
of the pipeline. An `EarlierResult` resolves the same XCom at render time and draws no edge, like
Airflow's own `literal()`; the DAG's `chain(...)` then is the pipeline's order, and the DAG
integrity test checks that every producer named this way is an upstream of its consumer.
With a pydantic `model`, the value is validated into it and `[...]` paths are checked at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk.definitions._internal.mixins import ResolveMixin
from pydantic import BaseModel


def _attribute_type(owner: type, name: str) -> type | None:
    """The type behind `name` on a model (a field or a property); None when it has no such attribute."""
    field = getattr(owner, "model_fields", {}).get(name)
    if field is not None:
        annotation = field.annotation
        return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else object
    return object if isinstance(getattr(owner, name, None), property) else None


@dataclass(frozen=True)
class EarlierResult(ResolveMixin):
    """The XCom of `task_id` (validated into `model` if given), or the value at `path` inside it."""

    task_id: str
    model: type[BaseModel] | None = None
    path: tuple[str, ...] = ()

    def __getitem__(self, dotted: str) -> EarlierResult:
        names = tuple(dotted.split("."))
        if self.model is not None:
            owner: type = self.model
            for name in (*self.path, *names):
                found = _attribute_type(owner, name)
                if found is None:
                    raise KeyError(f"{owner.__name__} has no attribute {name!r} (in {dotted!r})")
                owner = found
        return replace(self, path=(*self.path, *names))

    def iter_references(self) -> tuple:
        return ()  # deliberately no XCom dependency edge: see the module docstring

    def resolve(self, context: Any) -> Any:
        value = context["ti"].xcom_pull(task_ids=self.task_id)
        if value is None:
            raise AirflowSkipException(f"{self.task_id} left no result: nothing to do")
        if self.model is not None:
            value = self.model.model_validate(value)
        for name in self.path:
            value = getattr(value, name) if self.model is not None else value[name]
        return value

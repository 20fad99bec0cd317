"""The janitor: what exists (inventory), what to do about it (plan, pure), doing it (actions), the report.

`retire_fast_snapshot_restores(ec2, keep, pipeline)` is also the rollout's FSR retirement."""

from ml_cache.janitor.actions import retire_fast_snapshot_restores

__all__ = ["retire_fast_snapshot_restores"]

"""The Assets the pipeline publishes: data teams schedule on them (contracts in README/DESIGN)."""

from __future__ import annotations

from airflow.sdk import Asset

# One event per published snapshot; extra: snapshot_id, image_set, images, arch, fsr_availability_zones, run_id.
ML_CONTAINER_CACHE = Asset("ml_container_cache")
# One event per rollout that passed validation; extra: snapshot, images, validation report.
ML_CONTAINER_CACHE_READY = Asset("ml_container_cache_ready")

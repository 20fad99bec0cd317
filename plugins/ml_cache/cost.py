"""What the cache costs, in USD, from the config's price table (`prices:`): the one place that turns
hours and bytes into money, for the build's cost report and the janitor's savings.

AWS bills EBS snapshot and volume storage per GB-month where a GB is 2^30 bytes, FSR per snapshot
per AZ-hour (per minute, one hour minimum per enable), instances per second of running.
"""

from __future__ import annotations

from ml_cache.settings.models import Prices

HOURS_PER_MONTH = 730  # AWS's pricing month
GIB = 1024**3


def fsr_monthly(az_count: int, prices: Prices) -> float:
    """A month of Fast Snapshot Restore on one snapshot in `az_count` AZs."""
    return az_count * prices.fsr_per_az_hour * HOURS_PER_MONTH


def fsr_cost(az_hours: float, prices: Prices) -> float:
    return az_hours * prices.fsr_per_az_hour


def snapshot_monthly(stored_bytes: int, prices: Prices) -> float:
    """A month of snapshot storage for `stored_bytes` (a snapshot's own blocks: full or incremental)."""
    return stored_bytes / GIB * prices.snapshot_per_gb_month


def volume_monthly(size_gib: int, prices: Prices) -> float:
    """A month of a gp3 volume of `size_gib` (IOPS/throughput above the free baseline not included)."""
    return size_gib * prices.volume_per_gb_month


def instance_cost(instance_type: str, hours: float, prices: Prices) -> float | None:
    """`hours` of `instance_type`, or None when the price table does not list the type."""
    price = prices.instance_per_hour.get(instance_type)
    return None if price is None else hours * price

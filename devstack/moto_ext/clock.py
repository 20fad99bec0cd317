"""Route moto's timestamps through the local cloud's clock (devstack.clock).

moto stamps LaunchTime, StartTime, CreateTime, LastModifiedDate, ... with moto.core.utils.utcnow,
which its model modules import by name: each such module binding is replaced, as is the function
in moto.core.utils itself (its unix_time and ISO helpers call it).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import moto.core.utils

from devstack import clock

# The moto packages whose models stamp what the pipeline reads (instances, volumes, snapshots,
# launch templates, SSM parameters and documents, EBS direct snapshots, EKS clusters and node groups).
TIMESTAMPED_PACKAGES = ("moto.ec2.models", "moto.ssm", "moto.ebs", "moto.eks")

_original_utcnow = moto.core.utils.utcnow


def install() -> None:
    for package in TIMESTAMPED_PACKAGES:
        importlib.import_module(package)
        module = sys.modules[package]
        for info in pkgutil.iter_modules(getattr(module, "__path__", []), package + "."):
            importlib.import_module(info.name)
    prefixes = tuple(package + "." for package in TIMESTAMPED_PACKAGES)
    for name, module in list(sys.modules.items()):
        ours = name == "moto.core.utils" or name.startswith(prefixes)
        if ours and getattr(module, "utcnow", None) is _original_utcnow:
            module.utcnow = clock.naive_utcnow  # type: ignore[attr-defined]

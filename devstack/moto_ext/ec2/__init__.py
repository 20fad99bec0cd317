"""EC2 for the local cloud: instances with sandboxes, snapshots as volume copies, Fast Snapshot Restore."""

from __future__ import annotations

from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
from moto.ec2.models.instances import Instance, InstanceBackend
from moto.ec2.responses import EC2Response
from moto.moto_api import state_manager

from devstack.moto_ext import _patch
from devstack.moto_ext.ec2 import fsr, idempotency, models, responses


def install() -> None:
    state_manager.register_default_transition(fsr.STATE_MODEL, {"progression": "time", "seconds": 1})
    for handler in (responses.enable_fast_snapshot_restores, responses.disable_fast_snapshot_restores,
                    responses.describe_fast_snapshot_restores):
        _patch.replace(EC2Response, handler.__name__, lambda _orig, h=handler: h)
    Snapshot.progress = property(models.snapshot_progress)  # type: ignore[assignment,method-assign]
    _patch.replace(EC2Response, "create_snapshot", responses.create_snapshot)
    _patch.replace(EC2Response, "delete_snapshot", responses.delete_snapshot)
    _patch.replace(EC2Response, "run_instances", responses.run_instances)
    _patch.replace(EBSBackend, "create_volume", models.create_volume)
    _patch.replace(EBSBackend, "delete_volume", models.delete_volume)
    _patch.replace(EBSBackend, "attach_volume", models.attach_volume)
    _patch.replace(EBSBackend, "detach_volume", models.detach_volume)
    _patch.replace(InstanceBackend, "run_instances", models.run_instances)
    _patch.replace(Instance, "terminate", models.terminate)


def reset() -> None:
    fsr.reset()
    idempotency.reset()

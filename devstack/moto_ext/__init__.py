"""A small extension of moto for the local cloud, pinned to one moto version.

It hooks into moto where moto itself dispatches: response handlers are looked up by action name
on the response classes (EC2Response, SimpleSystemManagerResponse, EKSResponse), EKS routes come
from moto.eks.urls.url_paths, and moto.moto_api's state manager holds staged transitions. Those
are private details, so the extension refuses any moto version it was not written against.

Shaped like moto's own services: per service (ebs, ec2, ecr, eks, events, iam, ssm) a `models` module holds the state
and its rules, a `responses` module the request handlers, and the package's install()/reset().
"""

from __future__ import annotations

import threading

import moto

PINNED_MOTO_VERSION = "5.2.5"


def check_moto_version(found: str, pinned: str = PINNED_MOTO_VERSION) -> None:
    """Raise RuntimeError unless `found` is exactly the pinned moto version."""
    if found != pinned:
        raise RuntimeError(
            f"devstack.moto_ext is written against moto=={pinned} but moto=={found} is installed; "
            f"install moto[server]=={pinned} (see constraints.txt) or port the extension"
        )


check_moto_version(moto.__version__)

_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Patch moto's response classes and models (idempotent; process-wide)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from devstack.moto_ext import clock, ebs, ec2, ecr, eks, events, iam, ssm

        clock.install()
        ebs.install()
        ec2.install()
        ecr.install()
        events.install()
        iam.install()
        ssm.install()
        eks.install()
        _hook_moto_reset()
        _installed = True


def reset_state() -> None:
    """Forget extension state that moto's own reset does not know about.

    Instances vanish with moto's backends, so their sandboxes are torn down too.
    """
    from devstack import sandbox
    from devstack.agent import runner
    from devstack.moto_ext import ebs, ec2, ecr, eks, ssm

    for box in sandbox.all_sandboxes():
        runner.terminate_instance(box.instance_id)
    sandbox.teardown_all()
    sandbox.forget_all()
    ebs.reset()
    ec2.reset()
    ecr.reset()
    eks.reset()
    ssm.reset()


def _hook_moto_reset() -> None:
    """`POST /moto-api/reset` (and moto's in-process reset) also resets the extension."""
    from moto.moto_api._internal.models import MotoAPIBackend

    from devstack.moto_ext import _patch

    def make(original):  # type: ignore[no-untyped-def]
        def reset(self) -> None:  # type: ignore[no-untyped-def]
            reset_state()
            original(self)

        return reset

    _patch.replace(MotoAPIBackend, "reset", make)

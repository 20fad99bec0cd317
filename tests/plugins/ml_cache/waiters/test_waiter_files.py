"""Every JSON file under plugins/ml_cache/waiters is a botocore waiter model our hook for that client reads."""

from __future__ import annotations

import json

import botocore.session
import jmespath
import pytest
from botocore import xform_name
from botocore.waiter import WaiterModel

from ml_cache.hooks._waiters import WAITERS_DIR
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.eks import CacheEksHook
from ml_cache.hooks.ssm import CacheSsmHook

FILES = sorted(WAITERS_DIR.glob("*.json"))
HOOKS = {"ec2": CacheEc2Hook, "eks": CacheEksHook, "ssm": CacheSsmHook}
SESSION = botocore.session.get_session()


def test_there_is_one_file_per_hook_client() -> None:
    assert sorted(path.stem for path in FILES) == sorted(HOOKS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_loads_as_a_version_2_waiter_model(path) -> None:
    config = json.loads(path.read_text())
    assert config["version"] == 2
    model = WaiterModel(config)
    assert model.waiter_names == sorted(config["waiters"])
    for name in model.waiter_names:
        waiter = model.get_waiter(name)
        assert waiter.delay > 0 and waiter.max_attempts > 0
        assert any(acceptor.state == "success" for acceptor in waiter.acceptors), name
        for acceptor in waiter.acceptors:
            assert acceptor.state in ("success", "failure", "retry")
            if acceptor.matcher.startswith("path"):
                jmespath.compile(acceptor.argument)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_operations_exist_in_the_botocore_service_model(path) -> None:
    service = SESSION.get_service_model(path.stem)
    model = WaiterModel(json.loads(path.read_text()))
    for name in model.waiter_names:
        assert model.get_waiter(name).operation in service.operation_names, name


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_names_do_not_shadow_botocore_waiters(path) -> None:
    """A custom waiter wins over botocore's of the same name in AwsBaseHook.get_waiter."""
    botocore_names = {xform_name(name) for name in SESSION.get_waiter_model(path.stem).waiter_names}
    assert not set(json.loads(path.read_text())["waiters"]) & botocore_names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_hook_of_that_client_reads_the_file(path) -> None:
    hook = HOOKS[path.stem](aws_conn_id=None, region_name="us-west-2")
    assert hook.cache_waiter_path == path
    assert set(json.loads(path.read_text())["waiters"]) <= set(hook.list_waiters())

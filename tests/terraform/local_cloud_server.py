"""Serve the local cloud for Terraform tests in its own process; print the endpoint, run until stdin closes.

A separate process keeps moto's global backends (and MOTO_IAM_LOAD_MANAGED_POLICIES, read when
the IAM backend is first built) away from the other tests of the session. devstack's server is
preferred (moto plus the project's extensions); plain moto serves when devstack is unavailable
or when ML_CACHE_TF_CLOUD=moto.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any


def start_server() -> tuple[str, Any, str]:
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    if os.environ.get("ML_CACHE_TF_CLOUD") == "moto":
        return start_moto()
    try:
        from devstack import server as devstack_server

        home = Path(tempfile.mkdtemp(prefix="ml-cache-tf-devstack-"))
        handle = devstack_server.start(port=0, home=home)
        return handle.endpoint, handle, "devstack"
    except Exception as error:  # any import or start failure: fall back to plain moto
        print(f"devstack unavailable ({type(error).__name__}: {error}); using plain moto", file=sys.stderr)
    return start_moto()


def start_moto() -> tuple[str, Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}", server, "moto"


def main() -> None:
    endpoint, server, kind = start_server()
    print(f"{kind} {endpoint}", flush=True)
    sys.stdin.read()  # the test closes our stdin when it is done
    server.stop()  # devstack: also tears down its sandboxes
    home = getattr(server, "home", None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

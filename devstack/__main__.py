"""The local cloud's one command line.

    python -m devstack run     # up, one build and its rollout followed to their outcome, down
    python -m devstack up      # registry + local cloud + Airflow UI on http://localhost:8080, left running
    python -m devstack up --airflow celery   # the same on CeleryExecutor, Postgres and Redis
    python -m devstack up --cloud-only   # just the AWS endpoint in the background; prints it
    python -m devstack down    # stop what up/run started (by PID), unmount, detach loop devices
    python -m devstack serve   # the AWS endpoint in the foreground (what `up` runs in the background)
    python -m devstack status  # the background endpoint, its sandboxes and running commands

Every service listens on 127.0.0.1 and runs detached with a pid file under the devstack home
($DEVSTACK_HOME, default .devstack/), so `down` (or the next `run`, after an interrupted one)
stops exactly those processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from devstack import process
from devstack.stack import services
from devstack.stack.layout import Layout, say


def parse(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, default=None, help="devstack home (default $DEVSTACK_HOME)")
    common.add_argument("--port", type=int, default=None, help="the AWS endpoint's port (default $DEVSTACK_PORT)")
    registries = argparse.ArgumentParser(add_help=False)
    registries.add_argument("--plain-http-registry", action="append", default=[], dest="registries",
                            help="host:port of a loopback registry builders may use over plain HTTP")
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", parents=[common], help="build the demo cache end to end (KEEP=1 leaves it running)")
    up = commands.add_parser("up", parents=[common, registries], help="start the stack, left running")
    up.add_argument("--cloud-only", action="store_true", help="only the AWS endpoint, no registry or Airflow")
    up.add_argument("--airflow", choices=("standalone", "celery"), default=os.environ.get("AIRFLOW") or "standalone",
                    help="airflow standalone (SQLite), or CeleryExecutor with Postgres and Redis (default $AIRFLOW)")
    commands.add_parser("down", parents=[common], help="stop what up/run started and clean up")
    commands.add_parser("serve", parents=[common, registries], help="the AWS endpoint in the foreground")
    commands.add_parser("status", parents=[common], help="the background AWS endpoint's state")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    layout = Layout.from_env(args.home, args.port)
    try:
        if args.command == "serve":
            from devstack import server

            server.serve(layout.cloud_port, layout.home, tuple(args.registries))
        elif args.command == "up" and args.cloud_only:
            print(services.cloud_endpoint(layout) or services.start_cloud(layout, tuple(args.registries)))
        elif args.command == "up":
            from devstack.stack.up import up

            up(layout, flavour=args.airflow)
        elif args.command == "run":
            from devstack.stack.run import run

            return run(layout, keep=os.environ.get("KEEP") == "1")
        elif args.command == "down":
            say("local cloud stopped" if services.down(layout) else "nothing was running; cleaned up")
        else:
            print(json.dumps(services.status(layout), indent=2))
    except process.NotReady as error:
        raise SystemExit(str(error)) from error
    return 0


if __name__ == "__main__":
    sys.exit(main())

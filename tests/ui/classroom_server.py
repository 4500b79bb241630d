"""Start the multi-user editor for tests: ``python -m tests.ui.classroom_server --port N --workspace ROOT
[--builtin] [--quota BYTES] [--queue-limit N] [--trusted-proxy ADDR]``. As ``nodeflow serve --users``, with a
cheap password hash (accounts made by the tests use one too) and, unless ``--builtin``, the test node pack and
its gate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from argon2 import PasswordHasher  # noqa: E402

from nodeflow.node import Registry  # noqa: E402
from nodeflow.server import ClassServer  # noqa: E402
from nodeflow.users import Accounts  # noqa: E402

#: Argon2id at its cheapest: the tests sign in often, and the machine is small
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--builtin", action="store_true", help="the real catalogue instead of the test pack")
    parser.add_argument("--quota", type=int, help="each user's disk quota in bytes")
    parser.add_argument("--queue-limit", type=int, default=10)
    parser.add_argument("--in-process", action="store_true", help="no worker process per project")
    parser.add_argument("--idle-seconds", type=float, default=600.0)
    parser.add_argument("--trusted-proxy", action="append", default=[], help="as serve's (none by default)")
    args = parser.parse_args()
    if args.builtin:
        registry = Registry.discover(plugins=False)
    else:
        import tests.gatepack as gates
        import tests.nodepack as pack

        registry = Registry()
        registry.add_module(pack)
        registry.add_module(gates)
    root = Path(args.workspace)
    server = ClassServer(root, registry, Accounts(root, hasher=CHEAP), device="cpu", isolate=not args.in_process,
                         quota_bytes=args.quota, queue_limit=args.queue_limit, idle_seconds=args.idle_seconds)
    from nodeflow.ui.site import serve_users

    try:
        serve_users(server, port=args.port, trusted_proxies=args.trusted_proxy)
    finally:
        server.close()


if __name__ == "__main__":
    main()

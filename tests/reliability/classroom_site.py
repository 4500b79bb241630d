"""The multi-user site in this process: NiceGUI's app with sign-in, projects, the per-project API and
uploads installed (as ``nodeflow serve --users`` does), reached over ASGI, the test pack as its
catalogue. Three users: alice, bob and teacher (an admin), each with an API token."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
import zipfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from nodeflow.graph import Graph
from nodeflow.node import Registry
from nodeflow.server import ClassServer
from nodeflow.users import Accounts, User
from nodeflow.users.login import LoginThrottle
from tests import gatepack, nodepack
from tests.imagegen import draw
from tests.simulation import app_simulation
from tests.ui.server import demo_graph

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
BASE = "http://127.0.0.1:8080"
NAMES = ("alice", "bob", "teacher")


def pack() -> Registry:
    registry = Registry()
    registry.add_module(nodepack, source="test pack")
    registry.add_module(gatepack, source="test pack")
    return registry


def quick_graph() -> Graph:
    """The demo graph with a slow node that is quick."""
    data = demo_graph().model_dump(mode="json")
    for node in data["nodes"]:
        if node["id"] == "slow":
            node["params"] = {"steps": 2, "delay": 0.0}
    return Graph.from_data(data)


def image_bytes(fmt: str = "PNG", size: int = 16, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    draw("circle", size, random.Random(seed)).save(buffer, fmt)
    return buffer.getvalue()


def image_zip(classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3) -> bytes:
    """A real zip of PNGs in class folders, as a person zips a dataset folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for c, name in enumerate(classes):
            for i in range(per_class):
                archive.writestr(f"pets/{name}/{i}.png", image_bytes(seed=10 * c + i))
    return buffer.getvalue()


@dataclass
class Site:
    server: ClassServer
    users: dict[str, User]
    tokens: dict[str, str]
    transport: httpx.ASGITransport
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    #: the site (nodeflow.ui.multiuser.MultiUser)
    mu: Any = None

    def client(self, name: str) -> httpx.AsyncClient:
        """A script of ``name``'s: their API token as a Bearer header."""
        if name not in self.clients:
            self.clients[name] = httpx.AsyncClient(transport=self.transport, base_url=BASE, timeout=60,
                                                   headers={"Authorization": f"Bearer {self.tokens[name]}"})
        return self.clients[name]

    async def wait_idle(self, name: str, project_id: str, timeout: float = 60) -> None:
        """Until nothing of the project runs or waits."""
        deadline = time.monotonic() + timeout
        client = self.client(name)
        while time.monotonic() < deadline:
            runs = (await client.get(f"/api/p/{project_id}/runs")).json()
            if all(r["status"] not in ("queued", "running") for r in runs):
                return
            await _pause()
        raise AssertionError(f"project {project_id} still busy after {timeout} s")


async def _pause() -> None:
    await asyncio.sleep(0.05)


@asynccontextmanager
async def classroom_site(root: Path, registry: Registry | None = None, **server_args: Any):
    from nicegui import app

    from nodeflow.ui.site import install_multiuser

    accounts = Accounts(root, hasher=CHEAP)
    users = {name: accounts.add(name, f"{name}-password", admin=name == "teacher") for name in NAMES}
    tokens = {name: accounts.create_token(name, "tests")[1] for name in NAMES}
    server = ClassServer(root, registry or pack(), accounts, device="cpu", isolate=False, **server_args)
    async with app_simulation():
        mu = install_multiuser(server, throttle=LoginThrottle(per_name_at_address=(1000, 1, 60),
                                                              per_address=(1000, 1, 60)))
        site = Site(server, users, tokens, httpx.ASGITransport(app, client=("127.0.0.1", 40000)), mu=mu)
        try:
            yield site
        finally:
            for client in site.clients.values():
                await client.aclose()
            server.close()


def tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders and links)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(folder.rglob("*")) if not any(part in skip for part in p.parts)}


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)

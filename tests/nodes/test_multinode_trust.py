"""A training on several machines run by a shared server, where the other "machine" may be anyone:
a launch the admin's limits forbid connects nowhere, a rank reads what another rank sends as JSON
only (a pickle is refused, never run), and the rendezvous id is a secret no run record shows."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.executor import Executor
from nodeflow.limits import JobLimits
from nodeflow.node import ParamProblem, RunContext
from nodeflow.runs import Recording, RunStore
from nodes.engine.distributed import MalformedExchange, decode_json
from nodes.engine.launch import SECRET_ENV, Launch, Machines, SettingError, machines
from nodes.engine.multinode import JOIN_TIMEOUT, JOIN_TIMEOUT_ENV, RESTRICTED_JOIN_TIMEOUT, free_port, join_timeout
from nodes.ports import ModelValue
from nodes.training import Trainer
from tests.nodes.conftest import ROOT
from tests.nodes.test_ddp import SPEC, tiny  # noqa: F401  (tiny: the fixture)
from tests.nodes.test_multinode import folder, graph, params  # noqa: F401  (folder: the fixture)

# -- the admin's rendezvous hosts -----------------------------------------------------------------------------


def test_a_server_that_allows_no_rendezvous_connects_nowhere(registry, folder, tmp_path, monkeypatch):  # noqa: F811
    """rendezvous_hosts=(): the student's endpoint is a listener here; neither pricing the run nor
    running it connects to it, and both refusals name rdzv_endpoint and the admin's setting."""
    monkeypatch.setattr("nodes.engine.multinode.JOIN_TIMEOUT", 5)  # had it connected, it would not wait long
    executor = Executor(registry, tmp_path, device="cpu", limits=JobLimits(rendezvous_hosts=()))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
        limited = graph(folder, num_nodes=2, rdzv_endpoint=endpoint)
        priced = executor.estimate(limited, target="train")["nodes"]["train"]
        report = executor.run(limited, target="train")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # a connection made and closed would still wait here
            listener.accept()
    failed = report.nodes["train"]
    for error in (failed.error, priced["error"]):
        assert "rdzv_endpoint" in error and "--rendezvous-hosts" in error and "one machine only" in error, error
    assert failed.status == "failed" and priced["status"] == "error"
    key = executor.keys(limited)["train"]
    assert not (tmp_path / "checkpoints" / key / "ddp-job").exists()  # nothing was started or written


#: the admin's rendezvous secret, set on every machine of the server
SERVER = {SECRET_ENV: "s" * 32}


def test_the_admins_hosts_are_the_only_meeting_places():
    allowed = ("Head01.Cluster", "10.0.0.5", "::1")
    launch = Launch(num_nodes=2, allowed_hosts=allowed)

    def meet(endpoint: str) -> Machines:
        return machines(replace(launch, rdzv_endpoint=endpoint), SERVER)

    assert meet("head01.cluster.:29400") == Machines(2, 0, "head01.cluster.:29400")
    assert meet("10.0.0.5:1").several and meet("[0:0::1]:80").several
    for endpoint in ("evil.example:29400", "10.0.0.50:1", "127.0.0.1:29400", "head01:29400"):
        with pytest.raises(SettingError) as refused:
            meet(endpoint)
        assert refused.value.setting == "rdzv_endpoint" and "--rendezvous-hosts" in str(refused.value)
        assert "10.0.0.5, ::1, head01.cluster" in str(refused.value)
    # the server's own NODEFLOW_* settings are held to the same hosts
    with pytest.raises(SettingError, match="from NODEFLOW_RDZV_ENDPOINT"):
        machines(launch, {**SERVER, "NODEFLOW_RDZV_ENDPOINT": "elsewhere:29400"})
    # an allowed host on a server whose admin set no secret: refused before any machine is met
    with pytest.raises(SettingError, match=SECRET_ENV) as refused:
        machines(replace(launch, rdzv_endpoint="head01.cluster:1"), {})
    assert refused.value.setting == "num_nodes"
    # none allowed: num_nodes is what to change when no endpoint is given; an endpoint alone is refused too
    with pytest.raises(SettingError) as refused:
        machines(Launch(num_nodes=2, allowed_hosts=()), {})
    assert refused.value.setting == "num_nodes" and "one machine only" in str(refused.value)
    with pytest.raises(SettingError) as refused:
        machines(Launch(rdzv_endpoint="head01.cluster:1", allowed_hosts=()), {})
    assert refused.value.setting == "rdzv_endpoint"
    # one's own machines (no limits) meet where their owner says
    assert machines(Launch(num_nodes=2, rdzv_endpoint="anywhere:1"), {}).several
    # the trainer's param checks see the limits of the run's context too
    with pytest.raises(ParamProblem) as problem:
        Trainer.machines(params(num_nodes=2, rdzv_endpoint="evil:1"), {}, JobLimits(rendezvous_hosts=("head",)))
    assert problem.value.param == "rdzv_endpoint"


def test_on_a_server_machines_wait_for_each_other_briefly(tiny, tmp_path, monkeypatch):  # noqa: F811
    """A training the server allows waits RESTRICTED_JOIN_TIMEOUT for its other machines (the admin
    may say otherwise), not the ten minutes one's own machines wait, and then names the endpoint."""
    restricted, own = Launch(num_nodes=2, allowed_hosts=("head",)), Launch(num_nodes=2)
    assert join_timeout(restricted, {}) == RESTRICTED_JOIN_TIMEOUT < join_timeout(own, {}) == JOIN_TIMEOUT
    assert join_timeout(restricted, {JOIN_TIMEOUT_ENV: "5"}) == 5 == join_timeout(own, {JOIN_TIMEOUT_ENV: "5"})
    for wrong in ("0", "soon", "1e9"):
        with pytest.raises(SettingError, match=JOIN_TIMEOUT_ENV):
            join_timeout(restricted, {JOIN_TIMEOUT_ENV: wrong})
    monkeypatch.setenv(SECRET_ENV, SERVER[SECRET_ENV])
    monkeypatch.setenv(JOIN_TIMEOUT_ENV, "1")
    endpoint = f"127.0.0.1:{free_port()}"
    ctx = RunContext("train", tmp_path, device="cpu", key="k" * 64, limits=JobLimits(rendezvous_hosts=("127.0.0.1",)))
    with pytest.raises(ParamProblem) as problem:  # node_rank 1 is never started
        Trainer().run(ctx, params(num_nodes=2, rdzv_endpoint=endpoint), model=ModelValue(SPEC), data=tiny)
    assert problem.value.param == "rdzv_endpoint" and f"did not meet at rdzv_endpoint {endpoint} within 1 s" in \
        str(problem.value)


HOST = st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z][a-z0-9-]{0,8}){0,2}", fullmatch=True)


@given(host=HOST, other=HOST, upper=st.lists(st.booleans(), min_size=30, max_size=30), dot=st.booleans(),
       port=st.integers(1, 65535))
def test_a_host_is_compared_however_it_is_cased(host, other, upper, dot, port):
    cased = "".join(c.upper() if flip else c for c, flip in zip(host, upper)) + host[len(upper):]
    endpoint = f"{cased}{'.' if dot else ''}:{port}"
    assert machines(Launch(num_nodes=2, rdzv_endpoint=endpoint, allowed_hosts=(host.upper(),)), SERVER).several
    if other != host:
        with pytest.raises(SettingError):
            machines(Launch(num_nodes=2, rdzv_endpoint=f"{other}:{port}", allowed_hosts=(host,)), SERVER)


# -- what ranks exchange ---------------------------------------------------------------------------------------

#: a peer that speaks torch.distributed's object collectives at the wire level: length, then bytes
PEER = textwrap.dedent('''
    import os, pickle, sys, datetime
    import torch, torch.distributed as dist

    class Payload:
        def __reduce__(self):
            return (open, (os.environ["MARKER"], "w"))

    port, rank, poison = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=30))
    evil = pickle.dumps(Payload())
    if poison == "broadcast":  # rank 0 sends the job's token
        dist.broadcast(torch.tensor([len(evil)], dtype=torch.int64), 0)
        dist.broadcast(torch.frombuffer(bytearray(evil), dtype=torch.uint8), 0)
    else:  # rank 1 takes the token, and answers with a pickle where its sighting goes
        size = torch.empty(1, dtype=torch.int64)
        dist.broadcast(size, 0)
        dist.broadcast(torch.empty(int(size.item()), dtype=torch.uint8), 0)
    answer = evil if poison == "gather" else pickle.dumps(("peer", True))
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(2)]
    dist.all_gather(sizes, torch.tensor([len(answer)], dtype=torch.int64))
    longest = int(max(sizes).item())
    dist.all_gather([torch.empty(longest, dtype=torch.uint8) for _ in range(2)],
                    torch.frombuffer(bytearray(answer.ljust(longest, b"\\0")), dtype=torch.uint8))
''')

#: nodeflow's rank, reading the job through the engine's own exchange
RANK = textwrap.dedent('''
    import json, sys, datetime
    from pathlib import Path
    import torch, torch.distributed as dist
    from nodes.engine.multinode import _read_job

    port, rank, job = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=30))
    try:
        _read_job(job, rank, torch.device("cpu"), 1.0, job.parent)
        print(json.dumps({"kind": "returned", "message": ""}))
    except Exception as exc:
        print(json.dumps({"kind": type(exc).__name__, "message": str(exc)}))
    finally:  # as the engine's worker does: a group left to the interpreter's exit can abort it in gloo's thread
        dist.destroy_process_group()
''')


@pytest.mark.parametrize("poison, ours", [("broadcast", 1), ("gather", 0)])
def test_a_pickle_from_another_rank_is_never_unpickled(tmp_path, poison, ours):
    """A real gloo group of two processes on loopback: the peer sends, where nodeflow's rank expects
    the job's token (it being rank 0) or its sighting of the job (it being rank 1), a pickle that
    would create a file when loaded. Nodeflow's rank refuses it as not JSON, and the file never appears."""
    marker, job = tmp_path / "marker", tmp_path / "job"
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"token": "ab12"}))
    (tmp_path / "peer.py").write_text(PEER)
    (tmp_path / "rank.py").write_text(RANK)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MARKER": str(marker)}
    peer = subprocess.Popen([sys.executable, str(tmp_path / "peer.py"), str(port), str(1 - ours), poison],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rank = subprocess.run([sys.executable, str(tmp_path / "rank.py"), str(port), str(ours), str(job)], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        peer.kill()
        peer.wait()
    assert not marker.exists(), "the peer's pickle ran in nodeflow's rank"
    assert rank.returncode == 0, rank.stderr
    outcome = json.loads(rank.stdout.strip().splitlines()[-1])
    assert outcome["kind"] == "MalformedExchange", outcome
    assert f"rank {1 - ours} sent" in outcome["message"] and "not JSON" in outcome["message"]


class _Payload:
    def __reduce__(self):
        return (print, ("ran",))


def _is_pair(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], bool)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=200), st.builds(lambda v: pickle.dumps(v), st.text(max_size=20)),
                     st.just(pickle.dumps(_Payload())),
                     st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                                  lambda inner: st.lists(inner, max_size=3), max_leaves=8)
                     .map(lambda v: json.dumps(v).encode())))
def test_received_bytes_are_json_of_the_expected_form_or_refused(raw, capsys):
    try:
        value = decode_json(raw, 3, _is_pair, "a sighting")
    except MalformedExchange as exc:
        assert str(exc).startswith("rank 3 sent a sighting")
    else:
        assert _is_pair(value) and value == json.loads(raw)
    assert "ran" not in capsys.readouterr().out


# -- the rendezvous id ---------------------------------------------------------------------------------------


def _rendezvous_alone(registry, folder, workspace: Path, monkeypatch) -> tuple[str, str, str, bytes]:  # noqa: F811
    """Run the graph as the first of two machines whose second never comes, recording it in the run
    store, with torchrun told to log its settings (the rendezvous id among them). Returns the id
    torchrun used, the trainer's key, the node's error and every byte of the run store."""
    monkeypatch.setattr("nodes.engine.multinode.JOIN_TIMEOUT", 1)
    monkeypatch.setenv("LOGLEVEL", "INFO")
    executor = Executor(registry, workspace, device="cpu")
    alone = graph(folder, num_nodes=2, rdzv_endpoint=f"127.0.0.1:{free_port()}")
    seen: list = []
    executor.subscribe(seen.append)
    with Recording(RunStore(workspace), executor, alone, "train") as recording:
        recording.report = executor.run(alone, target="train")
    key = executor.keys(alone)["train"]
    error = recording.report.nodes["train"].error or ""
    assert "did not meet" in error, error
    log = (workspace / "checkpoints" / key / "ddp-job" / "torchrun.log").read_text()
    [rdzv_id] = set(re.findall(r"run_id\s*:\s*(\S+)", log))
    stored = b"".join(p.read_bytes() for p in workspace.glob("runs.sqlite*")) + repr(seen).encode()
    return rdzv_id, key, error, stored


@pytest.mark.slow
def test_the_rendezvous_id_is_a_secret_no_run_record_shows(registry, folder, tmp_path, monkeypatch):  # noqa: F811
    """Two workspaces, one graph: the same cache key (which the run store and the API show), but
    each machine set keys the id with its own secret, so the id is no function of the key; and
    neither the node's error nor the run store holds it."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    first, key, error, stored = _rendezvous_alone(registry, folder, tmp_path / "a", monkeypatch)
    monkeypatch.setenv(SECRET_ENV, "another secret, 32 characters..")
    second, same_key, second_error, second_stored = _rendezvous_alone(registry, folder, tmp_path / "b", monkeypatch)
    assert key == same_key and key.encode() in stored  # the run store does show the key
    assert first != second
    for rdzv_id in (first, second):
        assert not any(key[i:i + 12] in rdzv_id for i in range(len(key) - 11)), rdzv_id
    assert first not in error and first.encode() not in stored
    assert second not in second_error and second.encode() not in second_stored

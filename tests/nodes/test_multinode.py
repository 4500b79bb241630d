"""One training on several machines: two "machines" on 127.0.0.1, each one gloo process (devices 1,
num_nodes 2) meeting in torchrun's c10d rendezvous, give the model that one process gives; such a
run stops through the stop file and resumes from rank 0's checkpoint; and bad set-ups are refused
naming the param (or the workspace). Tiny images and a tiny model keep each launch to seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nodeflow.cache import Cache
from nodeflow.events import Log, Metric
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import Event, Interrupted, ParamProblem, RunContext
from nodes.engine.checkpoint import read_checkpoint
from nodes.engine.launch import SECRET_ENV, Machines, first_host
from nodes.engine.multinode import SECRET_FILE, WorkspaceNotShared, free_port
from nodes.ports import ModelValue
from nodes.training import Trainer
from tests.nodes.conftest import ROOT
from tests.nodes.test_ddp import SPEC, assert_same_model, tiny  # noqa: F401  (tiny: the fixture)

SETTINGS = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "epochs": 3, "batch_size": 24, "workers": 0}


def params(**extra) -> Trainer.Params:
    return Trainer.Params(**{**SETTINGS, **extra})


machines = Trainer.machines


# -- which machines: params, NODEFLOW_* and SLURM ------------------------------------------------------------

SRUN = {"SLURM_JOB_ID": "1234", "SLURM_NNODES": "4", "SLURM_JOB_NODELIST": "gpu[07-10]",
        "SLURM_STEP_NUM_NODES": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[07-10]",
        "SLURM_NODEID": "2"}


def test_slurm_node_lists_give_their_first_host():
    assert first_host("node[01-04]") == "node01"
    assert first_host("a,b") == "a"
    assert first_host("gpu[3,7-9],cpu1") == "gpu3"
    assert first_host("rack[1-2]-n[05-06]") == "rack1-n05"
    assert first_host("solo") == "solo"
    with pytest.raises(ValueError):
        first_host("node[01-04")


def test_one_machine_unless_told_otherwise():
    assert machines(params(), {}) == Machines()
    # a batch script's own shell is no srun step: its SLURM_NNODES counts machines nothing runs on yet
    assert machines(params(), {k: v for k, v in SRUN.items() if not k.startswith("SLURM_STEP")}) == Machines()


def test_srun_gives_the_count_the_rank_and_the_first_host():
    assert machines(params(), SRUN) == Machines(4, 2, "gpu07:29634")  # port 29400 + job id mod 1000
    # NODEFLOW_* comes before SLURM; a param set in the graph comes before both
    env = {**SRUN, "NODEFLOW_RDZV_ENDPOINT": "head:29500"}
    assert machines(params(), env) == Machines(4, 2, "head:29500")
    assert machines(params(node_rank=3, rdzv_endpoint="gpu08:1234"), env) == Machines(4, 3, "gpu08:1234")
    assert machines(params(num_nodes=2, rdzv_endpoint="h:1"), {"NODEFLOW_NODE_RANK": "1"}) == Machines(2, 1, "h:1")


def test_bad_settings_name_the_param():
    cases = [
        (params(num_nodes=2, node_rank=2, rdzv_endpoint="h:1"), {}, "node_rank", "node_rank is 2 but num_nodes is 2"),
        (params(num_nodes=2), {}, "rdzv_endpoint", "rdzv_endpoint is empty"),
        (params(num_nodes=2, rdzv_endpoint="node01"), {}, "rdzv_endpoint", "not host:port"),
        (params(num_nodes=2, rdzv_endpoint="node 01:80"), {}, "rdzv_endpoint", "not host:port"),
        (params(num_nodes=2, rdzv_endpoint="node01:70000"), {}, "rdzv_endpoint", "between 1 and 65535"),
        (params(num_nodes=2, rdzv_endpoint="h:1"), {"NODEFLOW_NODE_RANK": "one"}, "node_rank", "NODEFLOW_NODE_RANK"),
        (params(), {**SRUN, "SLURM_NODEID": "5"}, "node_rank", "(from SLURM_NODEID)"),
        (params(), {**SRUN, "SLURM_STEP_NUM_TASKS": "8"}, "num_nodes", "--ntasks-per-node=1"),
    ]
    for given, env, param, words in cases:
        with pytest.raises(ParamProblem) as problem:
            machines(given, env)
        assert problem.value.param == param and words in str(problem.value), (given, env, str(problem.value))


def graph(root: Path, **train) -> Graph:
    """image folder → formatter and input → flatten → dense(16) → dense(auto), both into a trainer, then
    an evaluation of the trained model on the test split."""
    nodes = [
        {"id": "data", "type": "data.image_folder", "params": {"root": str(root)}},
        {"id": "fmt", "type": "data.format", "params": {"height": 8, "width": 8}},
        {"id": "input", "type": "model.input", "params": {"height": 8, "width": 8}},
        {"id": "flat", "type": "model.flatten", "params": {}},
        {"id": "hidden", "type": "model.dense", "params": {"units": 16}},
        {"id": "out", "type": "model.dense", "params": {"units": "auto", "activation": "none"}},
        {"id": "train", "type": "train.trainer", "params": {**SETTINGS, **train}},
        {"id": "eval", "type": "eval.evaluate", "params": {"split": "test"}},
    ]
    chain = [("input", "flat"), ("flat", "hidden"), ("hidden", "out"), ("out", "train"), ("train", "eval")]
    edges = [{"source": a, "source_port": "model", "target": b, "target_port": "model"} for a, b in chain]
    edges += [{"source": "data", "source_port": "data", "target": "fmt", "target_port": "data"},
              {"source": "fmt", "source_port": "data", "target": "train", "target_port": "data"},
              {"source": "fmt", "source_port": "data", "target": "eval", "target_port": "data"}]
    return Graph.from_data({"format": "nodeflow.graph", "version": 1, "nodes": nodes, "edges": edges})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from tests.imagegen import make_image_set

    return make_image_set(tmp_path_factory.mktemp("folder"), ("circle", "stripes"), per_class=20, size=8,
                          fractions=(0.6, 0.2, 0.2))


def test_the_launch_params_leave_the_cache_key_alone_and_are_checked_with_the_graph(registry, folder, tmp_path):
    one = Executor(registry, tmp_path).keys(graph(folder))
    two = Executor(registry, tmp_path).keys(graph(folder, num_nodes=2, node_rank=1, rdzv_endpoint="h:29400"))
    assert one["train"] == two["train"] and one["eval"] == two["eval"]  # every machine computes the same keys
    assert Executor(registry, tmp_path).keys(graph(folder, devices=2))["train"] != one["train"]
    [problem] = Executor(registry, tmp_path).validate(graph(folder, num_nodes=2, node_rank=2, rdzv_endpoint="h:1"))
    assert problem.node_id == "train" and problem.param == "node_rank"


# -- two machines on this one ---------------------------------------------------------------------------------


def nodeflow_run(graph_file: Path, workspace: Path, report: Path, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "nodeflow.cli", "--no-plugins", "run", str(graph_file), "--workspace",
           str(workspace), "--device", "cpu", "--quiet", "--report", str(report)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return err


@pytest.mark.slow
def test_two_machines_train_the_model_one_process_trains(registry, folder, tmp_path):
    """``nodeflow run`` twice on one graph and one workspace, the second machine told its rank by
    NODEFLOW_NODE_RANK: the trainer's model and metrics are those of a run on one machine, and the
    second machine goes on with the graph using the first one's model."""
    single = graph(folder)
    double = graph(folder, num_nodes=2, rdzv_endpoint=f"127.0.0.1:{free_port()}")
    (tmp_path / "double.json").write_text(double.dumps())
    first = nodeflow_run(tmp_path / "double.json", tmp_path / "shared", tmp_path / "first.json")
    second = nodeflow_run(tmp_path / "double.json", tmp_path / "shared", tmp_path / "second.json",
                          NODEFLOW_NODE_RANK="1")
    # the one-machine reference trains in this process (what ``nodeflow run`` does) while the machines meet
    reference = Executor(registry, tmp_path / "one", device="cpu").run(single)
    assert reference.ok, reference.to_json()
    finish(first), finish(second)
    reports = {name: json.loads((tmp_path / f"{name}.json").read_text())["nodes"] for name in ("first", "second")}
    reports["one"] = json.loads(json.dumps(reference.to_json()))["nodes"]
    assert reports["first"]["train"]["status"] == "ran" and reports["second"]["train"]["status"] == "ran"
    epoch = {k: v for k, v in reports["one"]["train"]["metrics"].items() if k != "batch_loss"}  # one rank's half
    for name in ("first", "second"):  # the second machine reports the metrics the first one recorded
        assert {k: reports[name]["train"]["metrics"][k] for k in epoch} == pytest.approx(epoch, abs=1e-4)
        assert reports[name]["eval"]["metrics"]["accuracy"] == reports["one"]["eval"]["metrics"]["accuracy"]
    assert reports["one"]["eval"]["metrics"]["accuracy"] >= 0.75  # it learned (chance is 0.5)

    key = Executor(registry, tmp_path / "shared").keys(double)["train"]
    assert key == Executor(registry, tmp_path / "one").keys(single)["train"]
    trained = Cache(tmp_path / "shared" / "cache").get(key, Trainer)[0]["model"]
    alone = Cache(tmp_path / "one" / "cache").get(key, Trainer)[0]["model"]
    assert_same_model(trained, alone)
    assert not (tmp_path / "shared" / "checkpoints" / key).exists()  # the job folder went with them


def launch_both(data, workspaces: tuple[Path, Path], stop: threading.Event | None = None, key: str = "k" * 64,
                **extra) -> list:
    """Both machines' trainers at once, each in a thread: [(outputs or exception, events), ...] by node_rank."""
    endpoint = f"127.0.0.1:{free_port()}"
    results: list = [None, None]

    def machine(rank: int) -> None:
        events: list[Event] = []
        ctx = RunContext("train", workspaces[rank], device="cpu", emit=events.append, key=key,
                         stop_flag=stop if rank == 0 else None)
        try:
            given = params(num_nodes=2, node_rank=rank, rdzv_endpoint=endpoint, **extra)
            results[rank] = (Trainer().run(ctx, given, model=ModelValue(SPEC), data=data), events)
        except Exception as exc:  # noqa: BLE001 - the test looks at what each machine raised
            results[rank] = (exc, events)

    threads = [threading.Thread(target=machine, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


@pytest.mark.slow
def test_a_stopped_two_machine_run_resumes_from_rank_zeros_checkpoint(tiny, tmp_path):  # noqa: F811
    # a tenth of a second or so each on an idle 2-core box: the stop, pressed after epoch 2, lands well before the
    # end; the tiny set is learned within a few epochs (validation accuracy 1.0 by epoch 5), so 40 leave a wide margin
    EPOCHS = 40
    workspace = tmp_path / "shared"
    checkpoint = workspace / "checkpoints" / ("k" * 64) / "last.safetensors"
    stop = threading.Event()

    def press_stop_after_two_epochs() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if read_checkpoint(checkpoint)[0]["epoch"] >= 2:
                    break
            except Exception:  # noqa: BLE001 - not written yet, or being replaced
                pass
            time.sleep(0.05)
        stop.set()  # the stop button: the first machine's launcher turns it into the stop file

    threading.Thread(target=press_stop_after_two_epochs, daemon=True).start()
    first = launch_both(tiny, (workspace, workspace), stop=stop, epochs=EPOCHS, lr=0.05)
    assert [type(outcome) for outcome, _ in first] == [Interrupted, Interrupted]
    saved = read_checkpoint(checkpoint)[0]["epoch"]
    assert 2 <= saved < EPOCHS

    second = launch_both(tiny, (workspace, workspace), epochs=EPOCHS, lr=0.05)
    (outputs, events), (nothing, helper_events) = second
    logs = [e.message for e in events if isinstance(e, Log)]
    assert any(f"resuming after epoch {saved}" in line for line in logs), logs
    history = outputs["model"].history
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2 and history[-1]["val_accuracy"] >= 0.75
    steps = [e.step for e in events if isinstance(e, Metric) and e.name == "val_loss"]
    # rank 0's metrics, through the events file; the resumed run tells the epochs before the stop too
    assert steps == list(range(1, EPOCHS + 1))
    assert nothing == {} and any("this machine's part of the training is done" in e.message
                                 for e in helper_events if isinstance(e, Log))


def test_a_workspace_the_machines_do_not_share_is_named(tiny, tmp_path, monkeypatch):  # noqa: F811
    """With the secret from the environment the machines meet, and each learns that the others did
    not see the job the first one wrote."""
    monkeypatch.setattr("nodes.engine.multinode.SHARED_WAIT", 1.0)
    monkeypatch.setenv(SECRET_ENV, "s" * 32)
    results = launch_both(tiny, (tmp_path / "here", tmp_path / "there"))
    for outcome, _ in results:
        assert isinstance(outcome, WorkspaceNotShared), outcome
        assert str(outcome).startswith("workspace: ") and "not shared between the machines" in str(outcome)


def test_without_a_shared_workspace_or_secret_the_machines_say_why_they_did_not_meet(tiny, tmp_path,  # noqa: F811
                                                                                      monkeypatch):
    """The secret each machine keys the rendezvous id with lies in the workspace: a machine that
    never sees it says so, after waiting for it as long as it would wait in the rendezvous (a
    machine may reach its trainer much later than another), and the first machine, waiting alone,
    names both ways to share one."""
    monkeypatch.setattr("nodes.engine.multinode.JOIN_TIMEOUT", 1)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    (first, _), (second, _) = launch_both(tiny, (tmp_path / "here", tmp_path / "there"))
    assert isinstance(second, WorkspaceNotShared) and str(second).startswith("workspace: ")
    assert str(tmp_path / "there" / SECRET_FILE) in str(second) and "within 1 s" in str(second)
    assert SECRET_ENV in str(second)
    assert isinstance(first, ParamProblem) and first.param == "rdzv_endpoint", first
    assert "did not meet" in str(first) and SECRET_ENV in str(first) and "workspace" in str(first)


def test_machines_that_never_meet_name_the_endpoint(tiny, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr("nodes.engine.multinode.JOIN_TIMEOUT", 1)
    ctx = RunContext("train", tmp_path, device="cpu", key="k" * 64)
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(ParamProblem) as problem:  # node_rank 1 is never started
        Trainer().run(ctx, params(num_nodes=2, rdzv_endpoint=endpoint), model=ModelValue(SPEC), data=tiny)
    assert problem.value.param == "rdzv_endpoint" and f"did not meet at rdzv_endpoint {endpoint}" in str(problem.value)

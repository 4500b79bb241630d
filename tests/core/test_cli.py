"""The CLI as a user runs it: exit codes, one-line errors, the JSON report. What is about a separate process
(its exit status, Ctrl-C, the folder the shell starts it in, a new process finding the last run's results) runs
``python -m nodeflow.cli``; the rest calls ``main`` in this process, which prints and returns the same."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from nodeflow.cli import main
from tests.clirun import nodeflow_here

from .conftest import make_graph

ROOT = Path(__file__).resolve().parents[2]
PACK = str(ROOT / "tests" / "nodepack.py")


def nodeflow(*args, workspace=None, env=None, **kwargs):
    cmd = [sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, *args]
    if workspace is not None and args and args[0] == "run":
        cmd += ["--workspace", str(workspace)]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=120, **kwargs)


@pytest.fixture
def cli(capsys):
    """``nodeflow(...)`` in this process: the same exit code, stdout and stderr, without a Python start-up."""
    def call(*args, workspace=None):
        argv = ["--nodes", PACK, *args]
        if workspace is not None and args and args[0] == "run":
            argv += ["--workspace", str(workspace)]
        return nodeflow_here(capsys, argv)
    return call


@pytest.fixture
def chain_file(tmp_path, chain):
    path = tmp_path / "chain.json"
    chain.save(path)
    return path


def test_validate_names_every_node_in_a_cycle_and_every_mismatch(cli, tmp_path):
    graph = make_graph({"x": ("test.add", {}), "y": ("test.add", {}), "z": ("test.add", {}),
                        "a": ("test.constant", {}), "l": ("test.length", {}),
                        "l2": ("test.length", {})},
                       ["x.value->y.a", "y.value->z.a", "z.value->x.a", "a.value->l.text", "a.value->l2.text"])
    path = tmp_path / "bad.json"
    graph.save(path)
    result = cli("validate", str(path))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    cycle = [line for line in lines if "cycle" in line]
    assert len(cycle) == 1 and all(n in cycle[0] for n in ("x", "y", "z"))
    assert any(line.endswith("l:text: input 'text' expects Text but a.value gives Number; connect a node that "
                             "outputs Text") for line in lines)
    assert any("l2:text: input 'text' expects Text" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_validate_ok(cli, chain_file):
    result = cli("validate", str(chain_file))
    assert result.returncode == 0 and "valid (6 nodes, 4 edges)" in result.stdout


@pytest.mark.slow
def test_run_set_report_and_rerun_in_new_process(cli, chain_file, workspace, tmp_path):
    report = tmp_path / "report.json"
    first = cli("run", str(chain_file), "--report", str(report), workspace=workspace)
    assert first.returncode == 0, first.stderr
    data = json.loads(report.read_text())
    assert data["ok"] and {n["status"] for n in data["nodes"].values()} == {"ran"}
    assert data["nodes"]["sum"]["metrics"] == {"sum": 5.0}

    second = nodeflow("run", str(chain_file), "--set", "b.value=10", "--target", "length",  # a new process
                      "--report", str(report), workspace=workspace)
    assert second.returncode == 0, second.stderr
    data = json.loads(report.read_text())
    assert {k: v["status"] for k, v in data["nodes"].items()} == {
        "a": "cached", "b": "ran", "sum": "ran", "text": "ran", "length": "ran"}
    assert data["nodes"]["sum"]["metrics"] == {"sum": 12.0}


@pytest.mark.parametrize("args, message", [
    (["--set", "nope.value=1"], "no node 'nope'"),
    (["--set", "b.value"], "expected NODE.PARAM=VALUE"),
    (["--set", "b.value=[1,2]"], "b.value: Input should be a valid number"),
    (["--set", "b.colour=red"], "b.colour: unknown parameter"),
    (["--target", "ghost"], "no node with id 'ghost'"),
])
def test_bad_input_is_one_clear_line_and_exit_1(cli, chain_file, workspace, args, message):
    result = cli("run", str(chain_file), *args, workspace=workspace)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_node_says_how_to_resume(cli, tmp_path, workspace):
    graph = make_graph({"a": ("test.constant", {}), "bad": ("test.fail", {"message": "bad value"})},
                       ["a.value->bad.value"])
    path = tmp_path / "g.json"
    graph.save(path)
    result = cli("run", str(path), workspace=workspace)
    assert result.returncode == 1
    assert "node 'bad' failed: parameter 'message': bad value" in result.stderr
    assert f"nodeflow run {path} --target bad" in result.stderr


def test_missing_graph_file(cli, workspace):
    result = cli("run", "no/such/graph.json", workspace=workspace)
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_ctrl_c_stops_cleanly_with_130(tmp_path, workspace):
    graph = make_graph({"slow": ("test.slow", {"steps": 100_000, "delay": 0.01})}, [])
    path = tmp_path / "slow.json"
    graph.save(path)
    cmd = [sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, "run", str(path), "--workspace", str(workspace)]
    started = tmp_path / "runs.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NODEPACK_RUN_LOG": str(started)})
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:  # the node is running
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "slow stopped" in err


def test_nodes_lists_the_catalogue_as_json(cli):
    result = cli("nodes", "--json")
    assert result.returncode == 0
    types = {entry["type"]: entry for entry in json.loads(result.stdout)}
    add = types["test.add"]
    assert add["inputs"][0] == {"name": "a", "type": "Number", "accepts_as": ["Number"], "color": "#42a5f5",
                                "description": "", "optional": False}
    assert add["params_schema"]["properties"]["offset"]["type"] == "number"
    assert add["source"].startswith("--nodes")


def test_relative_paths_typed_in_the_shell_mean_the_shells_folder(tmp_path, workspace):
    graph = make_graph({"r": ("test.read_folder", {})}, [])
    path = tmp_path / "g.json"
    graph.save(path)
    (tmp_path / "three").mkdir()
    for name in "abc":
        (tmp_path / "three" / name).touch()
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, "run", str(path), "--set", "r.root=three",
           "--workspace", str(workspace), "--report", str(report), "--target", "r"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["nodes"]["r"]["metrics"] == {"files": 3}


@pytest.mark.parametrize("content, message", [
    ("{\"format\": \"nodeflow.graph\", \"version\": 1, \"nodes\": [", "not valid JSON"),
    ("{\"format\": \"nodeflow.graph\", \"version\": 1, \"nodes\": {\"a\": 1}}", "nodes: Input should be a valid list"),
    ("{\"format\": \"nodeflow.graph\", \"version\": 1, \"nodes\": [{\"id\": \"a\", \"type\": 5}]}",
     "node 'a' field 'type'"),
    ("\"just a string\"", "a graph document is a JSON object"),
])
def test_malformed_graph_files_exit_1_with_one_line(cli, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    for command in ("validate", "run"):
        result = cli(command, str(path), workspace=tmp_path / "ws")
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_a_huge_document_is_refused_cleanly(cli, tmp_path):
    nodes = [{"id": f"n{i}", "type": "test.constant"} for i in range(10_001)]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"format": "nodeflow.graph", "version": 1, "nodes": nodes}))
    result = cli("validate", str(path))
    assert result.returncode == 1 and "at most 10000" in result.stderr and "Traceback" not in result.stderr


def test_the_resume_hint_leaves_out_the_value_that_failed(cli, tmp_path, workspace):
    graph = make_graph({"a": ("test.constant", {}), "bad": ("test.fail", {"message": "x"})}, ["a.value->bad.value"])
    path = tmp_path / "g.json"
    graph.save(path)
    result = cli("run", str(path), "--set", "a.value=4", "--set", "bad.message=way too loud",
                      workspace=workspace)
    assert result.returncode == 1
    hint = result.stderr.strip().splitlines()[-1]
    assert "fix bad.message" in hint and "way too loud" not in hint
    assert hint.endswith(f"nodeflow run {path} --set a.value=4 --target bad")


def test_output_to_a_file_is_plain_lines_without_progress_bars(tmp_path, workspace):
    graph = make_graph({"a": ("test.constant", {}), "slow": ("test.slow", {"steps": 20, "delay": 0.01})},
                       ["a.value->slow.value"])
    path = tmp_path / "g.json"
    graph.save(path)
    log = tmp_path / "out.log"
    with log.open("w") as handle, redirect_stdout(handle), redirect_stderr(handle):  # as `> out.log 2>&1` does
        code = main(["--nodes", PACK, "run", str(path), "--workspace", str(workspace)])
    assert code == 0
    text = log.read_text()
    assert "\r" not in text and "%|" not in text and "\x1b[" not in text
    lines = text.splitlines()
    assert "… slow running" in lines and any(line.startswith("✓ slow (ran in") for line in lines)


@pytest.mark.parametrize("content", ["[" * 100_000, '{"a":' * 50_000,
                                     '{"format": "nodeflow.graph", "version": 1, "nodes": ' + "[" * 100_000])
def test_deeply_nested_documents_are_one_line_not_a_traceback(cli, tmp_path, content):
    path = tmp_path / "deep.json"
    path.write_text(content)
    for command in ("validate", "run"):
        result = cli(command, str(path), workspace=tmp_path / "ws")
        assert result.returncode == 1
        assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "nested too deeply" in result.stderr


def test_nan_and_infinity_in_a_file_or_a_set_are_named(cli, tmp_path, workspace):
    path = tmp_path / "nan.json"
    path.write_text('{"format": "nodeflow.graph", "version": 1, "nodes": [{"id": "t", "type": "test.constant",'
                    ' "params": {"value": NaN}}]}')
    result = cli("validate", str(path))
    assert result.returncode == 1 and "NaN is not valid JSON" in result.stderr and "got None" not in result.stderr
    graph = make_graph({"t": ("test.constant", {})}, [])
    good = tmp_path / "good.json"
    graph.save(good)
    result = cli("run", str(good), "--set", "t.value=Infinity", workspace=workspace)
    assert result.returncode == 1 and "param 'value' is inf" in result.stderr and "Traceback" not in result.stderr
    result = cli("run", str(good), "--set", "t.value=true", workspace=workspace)
    assert result.returncode == 1 and "t.value: Input should be a valid number" in result.stderr


# -- relative paths start at the workspace, whatever folder the command runs in -----------------------


def nodeflow_in(folder, *args):
    """The CLI run from ``folder``, with this checkout's nodeflow on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "nodeflow.cli", *args], capture_output=True, text=True, cwd=folder,
                          env=env, timeout=300)


@pytest.fixture
def cli_in(capsys, monkeypatch):
    """``nodeflow_in(folder, ...)`` in this process, its working folder changed to ``folder`` as the shell's is."""
    def call(folder, *args):
        monkeypatch.chdir(folder)
        return nodeflow_here(capsys, list(args))
    return call


@pytest.fixture
def picked(tmp_path):
    """A workspace holding data/hotdog, a graph whose dataset names it as the folder picker stores it
    (relative to the workspace), and an empty folder to run commands from."""
    from tests.imagegen import make_image_set

    workspace, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_image_set(workspace / "data" / "hotdog", ("circle", "stripes"), per_class=5, size=16,
                   class_names=("hotdog", "other"))
    graph = make_graph({"dataset": ("data.image_folder", {"root": "data/hotdog", "verify": False})}, [])
    path = tmp_path / "graph.json"
    graph.save(path)
    return workspace, elsewhere, path


def test_a_picked_folder_runs_and_validates_from_any_folder(cli_in, picked, tmp_path):
    workspace, elsewhere, path = picked
    report = tmp_path / "report.json"
    result = nodeflow_in(elsewhere, "run", str(path), "--workspace", str(workspace), "--report", str(report), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["nodes"]["dataset"]["metrics"]["train_images"] == 6
    again = cli_in(tmp_path, "run", str(path), "--workspace", str(workspace), "--report", str(report), "--quiet")
    assert again.returncode == 0 and json.loads(report.read_text())["nodes"]["dataset"]["status"] == "cached"
    checked = cli_in(elsewhere, "validate", str(path), "--workspace", str(workspace))
    assert checked.returncode == 0 and "valid (1 nodes" in checked.stdout, checked.stdout + checked.stderr
    swept = cli_in(elsewhere, "sweep", str(path), "--workspace", str(workspace), "--grid", "dataset.seed=[0,1]",
                   "--report", str(report), "--quiet")
    assert swept.returncode == 0, swept.stderr
    branches = json.loads(report.read_text())["branches"]
    assert [b["nodes"]["dataset"]["status"] for b in branches] == ["cached", "ran"], branches
    assert json.loads(path.read_text())["nodes"][0]["params"]["root"] == "data/hotdog"  # nothing to rewrite


def test_validate_names_a_path_that_does_not_exist(cli_in, picked):
    workspace, elsewhere, path = picked
    result = cli_in(elsewhere, "validate", str(path), "--set", "dataset.root=/nonexistent")
    assert result.returncode == 1, result.stdout
    assert f"{path}: invalid (1 error)" in result.stdout
    assert "dataset.root: folder '/nonexistent' does not exist" in result.stdout
    moved = cli_in(elsewhere, "validate", str(path), "--workspace", str(elsewhere))  # no data/hotdog there
    assert moved.returncode == 1 and "dataset.root: folder 'data/hotdog' (relative paths start at the workspace: " \
        f"'{elsewhere / 'data' / 'hotdog'}') does not exist" in moved.stdout, moved.stdout
    run = nodeflow_in(elsewhere, "run", str(path), "--workspace", str(elsewhere))
    assert run.returncode == 1 and "dataset.root" in run.stderr and "Traceback" not in run.stderr


def test_an_old_graph_with_a_path_from_the_starting_folder_is_rewritten_once_with_a_note(cli_in, tmp_path):
    """Written when relative paths started at the folder nodeflow was started in (here ``project``,
    whose data/hotdog the workspace lacks): the first command from there rewrites it, saying so."""
    from tests.imagegen import make_image_set

    project, workspace = tmp_path / "project", tmp_path / "ws"
    data = make_image_set(project / "data" / "hotdog", ("circle", "stripes"), per_class=5, size=16,
                   class_names=("hotdog", "other"))
    path = project / "graph.json"
    make_graph({"dataset": ("data.image_folder", {"root": "data/hotdog", "verify": False})}, []).save(path)
    first = nodeflow_in(project, "run", str(path), "--workspace", str(workspace), "--quiet")
    assert first.returncode == 0, first.stderr
    notes = [line for line in first.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: dataset.root: 'data/hotdog' was read from the folder nodeflow was started in; relative "
                     f"paths now start at the workspace ({workspace}), so it was rewritten to '{data}'",
                     f"note: {path} was rewritten with this path."]
    assert json.loads(path.read_text())["nodes"][0]["params"]["root"] == str(data)
    second = cli_in(tmp_path, "run", str(path), "--workspace", str(workspace), "--quiet")
    assert second.returncode == 0 and "note:" not in second.stderr, second.stderr

"""Malformed command lines that printed a traceback, ran anyway or blocked: each is one line naming
the option or the file, and nothing runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nodeflow.cli import main
from nodeflow.graph import Graph, GraphFileError

from .conftest import make_graph
from .test_cli import PACK, ROOT


@pytest.fixture
def graph_file(tmp_path):
    path = tmp_path / "g.json"
    make_graph({"a": ("test.constant", {}), "b": ("test.constant", {}), "sum": ("test.add", {})},
               ["a.value->sum.a", "b.value->sum.b"]).save(path)
    return path


def one_line(capsys, argv: list[str], *words: str) -> None:
    """``nodeflow ARGV`` (in this process, for speed) exits 1 with one line naming ``words``."""
    assert main(["--nodes", PACK, *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), lines


@pytest.mark.parametrize("source, says", [
    ("raise RuntimeError('the plugin is broken')\n", "RuntimeError: the plugin is broken"),
    ("def broken(:\n    pass\n", "SyntaxError"),
])
def test_a_node_plugin_that_raises_or_does_not_parse_is_one_line_naming_the_file(capsys, tmp_path, graph_file,
                                                                                  source, says):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(source)
    one_line(capsys, ["--nodes", str(plugin), "validate", str(graph_file)], f"--nodes {plugin}", says)


def test_an_mlflow_uri_of_an_unknown_scheme_is_refused_before_the_run(capsys, graph_file, workspace):
    pytest.importorskip("mlflow")
    one_line(capsys, ["run", str(graph_file), "--mlflow", "bogus://nowhere", "--workspace", str(workspace)],
             "--mlflow", "bogus://nowhere")
    assert not (workspace / "runs.sqlite").exists()  # nothing ran, nothing was recorded


def test_a_bad_set_value_outside_the_target_is_refused(capsys, graph_file, workspace):
    for command in (["run"], ["sweep", "--grid", "a.value=[1,2]"]):
        one_line(capsys, [*command, str(graph_file), "--target", "a", "--set", "b.value=lots", "--workspace",
                          str(workspace)], "--set b.value:")
    assert not (workspace / "runs.sqlite").exists()


def test_the_cli_caps_a_sweep_as_the_api_does(capsys, graph_file, workspace):
    values = ",".join(str(i) for i in range(65))
    one_line(capsys, ["sweep", str(graph_file), "--grid", f"a.value=[{values}]", "--workspace", str(workspace)],
             "65 branches is more than the 64")
    assert not (workspace / "runs.sqlite").exists()


def test_a_fifo_or_a_device_as_the_graph_file_is_refused_not_waited_on(capsys, tmp_path, workspace):
    fifo = tmp_path / "graph.json"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):  # each blocked or read forever before
        with pytest.raises(GraphFileError, match="not a regular file"):
            Graph.load(path)
    one_line(capsys, ["run", str(fifo), "--workspace", str(workspace)], "not a regular file")


REFUSED = [(["serve", "--port", "99999"], "--port", "'99999' is not a TCP port"),
           (["serve", "--port", "0"], "--port", "'0' is not a TCP port"),
           (["run", "g.json", "--device", "bogus"], "--device", "'bogus' is not a device"),
           (["sweep", "g.json", "--device", "cuda:x"], "--device", "'cuda:x' is not a device")]


def test_a_bad_port_or_device_is_refused_up_front_naming_the_option():
    script = textwrap.dedent(f"""
        import sys
        from nodeflow.cli import main
        for args, _, _ in {REFUSED!r}:
            try:
                main(args)
            except SystemExit as exc:
                print("exit", exc.code, "torch" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.split("\n")[:-1] == ["exit 2 False"] * len(REFUSED), result.stderr  # before torch loads
    for _, option, says in REFUSED:
        assert f"argument {option}: {says}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_forms_of_a_device_are_taken():
    from nodeflow.cli import build_parser

    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"):
        assert build_parser().parse_args(["run", "g.json", "--device", device]).device == device
    assert build_parser().parse_args(["serve", "--port", "65535"]).port == 65535


def test_a_serve_with_an_unknown_mlflow_scheme_is_refused_before_it_starts(capsys, workspace):
    pytest.importorskip("mlflow")
    one_line(capsys, ["serve", "--workspace", str(workspace), "--mlflow", "bogus://nowhere"], "--mlflow", "bogus://")

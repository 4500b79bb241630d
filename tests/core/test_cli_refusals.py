"""Malformed command lines that printed a traceback, the usage block or raised SystemExit, ran anyway or
blocked: each is one line naming the option or the file, and nothing runs. A file whose name starts with
"-" is that file, or refused in one line that says how to name it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nodeflow.cli import main
from nodeflow.graph import Graph, GraphFileError
from nodeflow.templates import list_templates

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
            print("exit", main(args), "torch" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.split("\n")[:-1] == ["exit 2 False"] * len(REFUSED), result.stderr  # before torch loads
    lines = result.stderr.splitlines()
    assert len(lines) == len(REFUSED), result.stderr  # one line each: no usage block
    for line, (_, option, says) in zip(lines, REFUSED):
        assert line.startswith("error: nodeflow ") and f"argument {option}: {says}" in line, line


def test_the_forms_of_a_device_are_taken():
    from nodeflow.cli import build_parser

    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"):
        assert build_parser().parse_args(["run", "g.json", "--device", device]).device == device
    assert build_parser().parse_args(["serve", "--port", "65535"]).port == 65535


def test_a_serve_with_an_unknown_mlflow_scheme_is_refused_before_it_starts(capsys, workspace):
    pytest.importorskip("mlflow")
    one_line(capsys, ["serve", "--workspace", str(workspace), "--mlflow", "bogus://nowhere"], "--mlflow", "bogus://")


# -- arguments that start with "-" ---------------------------------------------------------------------


@pytest.fixture
def dashed(tmp_path, monkeypatch, graph_file):
    """A folder holding graph files named ``-g.json`` and ``-:`` and a workspace ``-ws``, as the current folder."""
    for name in ("-g.json", "-:"):
        (tmp_path / name).write_text(graph_file.read_text())
    (tmp_path / "-ws").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NODEFLOW_WORKSPACE", str(tmp_path / "default-workspace"))
    return tmp_path


@pytest.mark.parametrize("argv", [["validate", "-g.json"], ["validate", "-:"], ["validate", "--", "-g.json"],
                                  ["validate", "--set", "a.value=2", "--", "-:"], ["validate", "./-g.json"]])
def test_a_graph_file_whose_name_starts_with_a_dash_is_that_file(capsys, dashed, argv):
    assert main(["--nodes", PACK, *argv]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{argv[-1]}: valid (3 nodes, 2 edges)")


def test_a_run_over_dashed_names_runs_the_file_into_the_folder(capsys, dashed):
    assert main(["--nodes", PACK, "run", "-g.json", "--workspace", "-ws", "--quiet"]) == 0, capsys.readouterr().err
    assert (dashed / "-ws" / "runs.sqlite").exists() and not (dashed / "default-workspace").exists()


@pytest.mark.parametrize("argv, says", [
    (["validate", "-missing.json"], "the following arguments are required: graph ('-missing.json' is not an option: "
                                    "put -- before it to give it as an argument, or write ./-missing.json for a file)"),
    (["validate", "-g.json", "-x"], "unrecognized arguments: -x ('-x' is not an option"),
    (["run", "-g.json", "--workspace", "-new"], "argument --workspace: expected one argument"),
    (["validate", "-g.json", "--bogus"], "unrecognized arguments: --bogus"),
    (["validate"], "the following arguments are required: graph"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["validate", "-g.json", "-a\nb"], "unrecognized arguments: -a\\nb"),  # escaped: still one line
])
def test_a_command_line_argparse_cannot_read_is_one_line_naming_the_argument(capsys, dashed, argv, says):
    assert main(["--nodes", PACK, *argv]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: nodeflow") and says in err, err
    assert "usage:" not in err and not out


def test_a_name_that_reads_as_an_option_and_is_no_file_is_refused_then_taken_after_the_double_dash(capsys, dashed):
    assert main(["--nodes", PACK, "validate", "-nothing"]) == 2
    assert main(["--nodes", PACK, "validate", "--", "-nothing"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[1] == "error: no graph file '-nothing' and no template of that name " \
        f"(templates: {', '.join(list_templates())})", err


def test_help_prints_the_usage_and_returns_zero(capsys):
    assert main(["run", "--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: nodeflow run") and "--dry-run" in out and not err


def test_the_console_command_exits_with_mains_code_and_one_line(dashed):
    for argv, code in ((["validate", "-nothing"], 2), (["validate", "-g.json"], 0), (["validate", "--help"], 0)):
        result = subprocess.run([sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, *argv], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == code and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == (1 if code else 0), result.stderr


TOKENS = st.sampled_from(["-", "--", "-:", "-g.json", "-ws", "-nothing", "g.json", "--set", "--set=a.value=2",
                          "--target", "--target=sum", "-h", "--he", "--bogus", "-x", "--workspace", "--workspace=-ws",
                          "--json", "--limit", "7", "-1", "a b", "-a b", "--no-plugins", "--debug"]) \
    | st.text(max_size=8)
COMMANDS = st.sampled_from([["validate"], ["lineage"], ["runs"], ["runs", "show"], ["runs", "diff"], ["templates"]])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(command=COMMANDS, rest=st.lists(TOKENS, max_size=5))
@example(command=["validate"], rest=["-:"])
@example(command=["validate"], rest=["--", "-nothing", "-x"])
@example(command=["runs", "show"], rest=["-1"])
def test_any_command_line_answers_in_one_line_or_does_its_work(capsys, dashed, command, rest):
    """Whatever is typed after a command, main returns 0, 1 or 2: help or the command's output, or one line
    on stderr; never SystemExit, a traceback or the usage block."""
    capsys.readouterr()
    code = main(["--nodes", PACK, *command, *rest])
    out, err = capsys.readouterr()
    assert code in (0, 1, 2) and "Traceback" not in err + out
    if code:
        assert err.count("\n") == 1 and err.startswith("error: ") and "usage:" not in err, err
    elif out.startswith("usage: "):
        assert any(t in ("-h", "--he") for t in rest[:rest.index("--") if "--" in rest else None]), rest

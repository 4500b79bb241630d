"""``nodeflow export-script`` under arbitrary arguments: a script that parses, or one line that says
what is wrong (exit 1, or 2 for a command line argparse cannot read), never a traceback or SystemExit;
and a refused export writes nothing."""

from __future__ import annotations

import ast
import itertools
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nodeflow.cli import main
from nodeflow.templates import template_path
from tests.imagegen import make_image_set

TEMPLATES = ("cats_vs_dogs_finetune", "hotdog_resnet18_finetune")
IDS = ("dataset", "formatter", "train", "train_ft", "compare", "classifier", "vgg16", "evaluate")
PARAMS = ("root", "epochs", "units", "activation", "weights", "batch_augment", "height", "lr", "colour")
VALUES = st.sampled_from(["1", "auto", "relu", "none", "mixup", "-3", "[1,2]", "NaN", "1e999", '"x"', "", "{"]) \
    | st.text(max_size=12)
SETS = st.lists(st.builds(lambda n, p, v: f"{n}.{p}={v}", st.sampled_from(IDS), st.sampled_from(PARAMS), VALUES)
                | st.text(max_size=16), max_size=3)
COUNTER = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("export-cli")
    images = make_image_set(base / "images", per_class=4, size=16)
    graph = json.loads(template_path(TEMPLATES[0]).read_text())
    next(n for n in graph["nodes"] if n["id"] == "dataset")["params"]["root"] = str(images)
    (base / "graph.json").write_text(json.dumps(graph))
    (base / "broken.json").write_text('{"format": "nodeflow.graph", "nodes": [')
    (base / "taken").mkdir()
    return base


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(graph=st.sampled_from([*TEMPLATES, "graph.json", "broken.json", "missing.json", "taken"]) | st.text(max_size=12),
       target=st.none() | st.sampled_from(IDS) | st.text(max_size=10), sets=SETS,
       output=st.sampled_from([None, "-", "new.py", "taken", "sub/dir/new.py", "bad\0name.py"]))
@example(graph="-:", target=None, sets=[], output=None)  # read as an option: SystemExit(2) and the usage block
@example(graph="-:", target="train", sets=["train.epochs=1"], output="new.py")
@example(graph="--", target=None, sets=[], output=None)
@example(graph="-h", target=None, sets=[], output="new.py")  # help, not a script
@example(graph="-a\nb", target=None, sets=[], output=None)  # one line even so
@example(graph="graph.json", target=None, sets=["\n"], output=None)  # the --set value's newline was printed as is
def test_export_script_answers_a_script_or_one_line(folder, capsys, graph, target, sets, output):
    n = next(COUNTER)
    ref = str(folder / graph) if graph in ("graph.json", "broken.json", "missing.json", "taken") else graph
    argv = ["--no-plugins", "export-script", ref, *(f"--set={s}" for s in sets)]
    if target is not None:
        argv.append(f"--target={target}")
    written = None
    if output is not None:
        written = output if output in ("-", "taken") else f"{n}-{output}"
        argv.append(f"--output={written if written == '-' else folder / written}")
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    if out.startswith("usage: "):  # a graph name that reads as -h or --help
        assert code == 0 and ref.startswith("-"), out
        return
    if code in (1, 2):
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert code == 1 or ref.startswith("-"), err  # only a graph name can read as an option here
        if written not in (None, "-", "taken"):  # refused: nothing written
            assert not (folder / written).exists()
        return
    assert code == 0
    text = out if written in (None, "-") else (folder / written).read_text()
    assert ast.parse(text) and "def main():" in text

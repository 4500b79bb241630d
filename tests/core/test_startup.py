"""Reading the catalogue and checking a graph import neither torch nor torchvision: every command,
the editor's start and each worker process would otherwise pay the seconds their import takes
before doing anything. torch is imported by what runs a node (run, estimate, script)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((ROOT / "templates").glob("*.json"))

STARTUP = """
import json, sys
from nodeflow.cli import main
from nodeflow.node import Registry

registry = Registry.discover(plugins=False)
forms = [node.describe() for node in registry]  # what the editor's palette and forms show
assert len(forms) > 15 and all(form["params_schema"] for form in forms), forms
codes = [main(["validate", path]) for path in sys.argv[1:]]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
print(json.dumps({"codes": codes, "heavy": heavy[:10]}))
"""


def startup(tmp_path, graphs=TEMPLATES):
    # the summary cache in a folder of the test's own; a mirror nobody answers (refused at once)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "NODEFLOW_MIRROR_URL": "http://127.0.0.1:9",
           "PYTHONPATH": str(ROOT)}
    found = subprocess.run([sys.executable, "-c", STARTUP, *map(str, graphs)], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=300)
    assert found.returncode == 0, found.stdout + found.stderr
    *said, report = found.stdout.strip().splitlines()
    return said, json.loads(report)


def test_catalogue_and_checking_the_templates_import_no_torch(tmp_path):
    assert len(TEMPLATES) >= 3
    # the first check of a graph with a backbone computes its layers' shapes with torch, and keeps them
    first_said, first = startup(tmp_path)
    assert first["heavy"]
    assert first["codes"][[p.name for p in TEMPLATES].index("cats_vs_dogs_finetune.json")] == 0, first_said
    said, again = startup(tmp_path)
    assert again == {"codes": first["codes"], "heavy": []}
    assert said == first_said  # the same verdicts, problems and warnings

    # a backbone pointed at a weights file of the person's own (the editor checks the graph at each edit):
    # shapes and parameter counts do not depend on the weights, so the kept summary answers, without torch
    weights = tmp_path / "my-resnet18.pth"
    weights.write_bytes(b"not read to check the graph")
    graph = json.loads((ROOT / "templates" / "hotdog_resnet18_finetune.json").read_text())
    next(n for n in graph["nodes"] if n["id"] == "resnet18_ft")["params"]["weights"] = str(weights)
    (tmp_path / "mine.json").write_text(json.dumps(graph))
    said, mine = startup(tmp_path, [tmp_path / "mine.json"])
    hotdog = [p.name for p in TEMPLATES].index("hotdog_resnet18_finetune.json")
    assert mine == {"codes": [first["codes"][hotdog]], "heavy": []}, said
    assert not any("weights" in line for line in said), said  # the file is there: only the data is missing

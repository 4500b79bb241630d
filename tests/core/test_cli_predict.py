"""``nodeflow predict`` refusals: whatever the image files hold and whichever node is named, a node
with no trained model, an unknown node or a file that is no image is one line on stderr (exit 1),
never a traceback, and nothing is written into the workspace."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.cli import main

from .conftest import make_graph
from .test_cli import PACK


def files_of(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=512), count=st.integers(1, 3),
       node=st.sampled_from(["a", "sum", "nope"]) | st.text(min_size=1, max_size=20).filter(
           lambda text: not text.startswith("-")))  # "-x" is an option to argparse
def test_any_image_bytes_and_node_are_refused_in_one_line(tmp_path_factory, capsys, data, node, count):
    base = tmp_path_factory.mktemp("predict-cli")
    graph = base / "g.json"
    make_graph({"a": ("test.constant", {}), "b": ("test.constant", {}), "sum": ("test.add", {})},
               ["a.value->sum.a", "b.value->sum.b"]).save(graph)
    images = []
    for i in range(count):
        images.append(base / f"image-{i}.png")
        images[-1].write_bytes(data)
    workspace = base / "ws"
    before = files_of(workspace)
    assert main(["--nodes", PACK, "predict", str(graph), node, *map(str, images), "--workspace", str(workspace)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    assert files_of(workspace) == before

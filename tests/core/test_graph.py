import json
import os

import pytest

from nodeflow.graph import Graph, GraphFileError

from .conftest import make_graph


def doc(**changes):
    base = {"format": "nodeflow.graph", "version": 1, "name": "g",
            "nodes": [{"id": "a", "type": "test.constant", "params": {}, "position": {"x": 1, "y": 2}},
                      {"id": "b", "type": "test.add", "params": {}, "position": {"x": 0, "y": 0}}],
            "edges": [{"source": "a", "source_port": "value", "target": "b", "target_port": "a"}]}
    base.update(changes)
    return base


def test_round_trip_keeps_ids_params_positions(tmp_path):
    graph = Graph.from_data(doc())
    path = tmp_path / "g.json"
    graph.save(path)
    again = Graph.load(path)
    assert again == graph
    assert json.loads(path.read_text())["nodes"][0]["position"] == {"x": 1.0, "y": 2.0}


@pytest.mark.parametrize("text, expected", [
    ("{not json", "not valid JSON"),
    ("[]", "a graph document is a JSON object"),
    (json.dumps(doc(format="other")), "'format' must be"),
    (json.dumps(doc(version=2)), "unsupported version 2"),
    (json.dumps(doc(nodes=[{"id": "a", "type": "x"}, {"id": "a", "type": "y"}], edges=[])), "duplicate node id 'a'"),
    (json.dumps(doc(edges=[{"source": "a", "source_port": "value", "target": "zz", "target_port": "a"}])),
     "unknown node 'zz'"),
    (json.dumps(doc(nodes=[{"id": "1bad id", "type": "x"}], edges=[])), "'1bad id' is not a usable id"),
    (json.dumps(doc(nodes=[{"id": "a", "type": "x", "colour": "red"}], edges=[])), "node 'a' field 'colour'"),
])
def test_malformed_documents_get_clear_errors(text, expected):
    with pytest.raises(GraphFileError) as info:
        Graph.loads(text, "g.json")
    assert expected in str(info.value)
    assert str(info.value).startswith("g.json: ")


def test_an_input_takes_one_edge():
    with pytest.raises(ValueError, match="two incoming edges"):
        make_graph({"a": ("test.constant", {}), "b": ("test.constant", {}), "s": ("test.add", {})},
                   ["a.value->s.a", "b.value->s.a"])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(GraphFileError, match="cannot read"):
        Graph.load(tmp_path / "nope.json")


def test_save_is_atomic_under_a_crash(tmp_path, monkeypatch):
    """A crash while writing leaves the old file whole and no temp file behind."""
    path = tmp_path / "g.json"
    Graph.from_data(doc(name="old")).save(path)
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk died")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        Graph.from_data(doc(name="new")).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]


def test_format_holds_no_absolute_paths_or_pickles():
    text = Graph.from_data(doc()).dumps()
    assert set(json.loads(text)) == {"format", "version", "name", "description", "nodes", "edges"}

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
    (json.dumps(doc(version=3)), "unsupported version 3; this nodeflow reads versions 1 and 2"),
    (json.dumps(doc(version=True)), "unsupported version True"),
    (json.dumps(doc(groups=[{"id": "g", "members": ["a", "zz"]}])), "group 'g' refers to unknown node 'zz'"),
    (json.dumps(doc(groups=[{"id": "g", "members": ["a"]}, {"id": "h", "members": ["a", "b"]}])),
     "node 'a' is in two groups ('g' and 'h')"),
    (json.dumps(doc(groups=[{"id": "g", "members": ["a"]}, {"id": "g", "members": ["b"]}])), "duplicate group id 'g'"),
    (json.dumps(doc(groups=[{"id": "g", "members": []}])), "groups.0.members"),
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
    assert set(json.loads(text)) == {"format", "version", "name", "description", "nodes", "edges", "groups"}


def test_a_version_1_file_loads_as_version_2_and_saves_as_it(tmp_path):
    """Files written before groups existed still open; saving writes the current version."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc()))  # version 1: no groups, no disabled flags
    graph = Graph.load(path)
    assert graph.version == 2 and graph.groups == [] and not any(n.disabled for n in graph.nodes)
    assert [(n.id, n.params, n.position.x) for n in graph.nodes] == [("a", {}, 1.0), ("b", {}, 0.0)]
    graph.save(path)
    saved = json.loads(path.read_text())
    assert saved["version"] == 2 and saved["groups"] == []
    assert "disabled" not in saved["nodes"][0]  # only a disabled node says so


def test_groups_and_disabled_nodes_round_trip(tmp_path):
    graph = Graph.from_data(doc(version=2, groups=[{"id": "part", "title": "Part", "members": ["a", "b"],
                                                     "collapsed": True, "position": {"x": 5, "y": 6}}]))
    graph = graph.model_copy(update={"nodes": [graph.nodes[0].model_copy(update={"disabled": True}), graph.nodes[1]]})
    path = tmp_path / "g.json"
    graph.save(path)
    again = Graph.load(path)
    assert again == graph
    assert [(g.title, g.members, g.collapsed, g.position.y) for g in again.groups] == [("Part", ["a", "b"], True, 6)]
    assert again.node("a").disabled and not again.node("b").disabled

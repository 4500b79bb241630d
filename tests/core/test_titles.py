"""Titles that follow a node's params: a type's ``title_cases`` and ``title_words`` on top of its
``title_template``, read from the catalogue entry as the editor reads it (JSON, no code)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field

from nodeflow.node import Node, NodeParams, auto_title, card_title


class Lens(Node):
    type = "test.lens"
    title = "Lens"
    title_template = "{mount}, {glass}"
    title_cases = (({"zoom": True, "glass": "stock"}, "{mount} zoom"), ({"zoom": True}, "{mount} zoom, {glass}"))
    title_words = {"mount": {"ef": "Canon EF", "f": "Nikon F"},
                   "glass": {"stock": "stock glass", "*": "glass from {}"}}

    class Params(NodeParams):
        mount: str = Field("ef")
        glass: str = Field("stock")
        zoom: bool = Field(True)


ENTRY = json.loads(json.dumps(Lens.describe()))  # as the catalogue travels


def test_the_first_case_that_matches_wins_and_words_say_the_values():
    assert auto_title(ENTRY, {}) == "Canon EF zoom"
    assert auto_title(ENTRY, {"mount": "f", "glass": "none"}) == "Nikon F zoom, glass from none"
    assert auto_title(ENTRY, {"zoom": False}) == "Canon EF, stock glass"
    assert auto_title(ENTRY, {"zoom": False, "glass": "/lenses/old/50mm.json"}) == "Canon EF, glass from 50mm.json"
    assert auto_title(ENTRY, {"zoom": False, "glass": "C:\\lenses\\35mm.json"}) == "Canon EF, glass from 35mm.json"
    assert auto_title(ENTRY, {"mount": "m42", "zoom": False}) == "m42, stock glass"  # no word: as it is
    assert card_title(Lens, "My lens", {"mount": "f"}) == "My lens"  # a typed title stays


@given(st.one_of(st.sampled_from(["ef", "f"]), st.text(max_size=20)), st.text(max_size=30), st.booleans(),
       st.dictionaries(st.just("other"), st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=3))))
def test_any_params_give_a_title_that_words_the_mount_and_says_zoom_only_when_it_zooms(mount, glass, zoom, other):
    title = auto_title(ENTRY, {"mount": mount, "glass": glass, "zoom": zoom, **other})
    assert title.startswith({"ef": "Canon EF", "f": "Nikon F"}.get(mount, mount))
    assert title.removeprefix({"ef": "Canon EF", "f": "Nikon F"}.get(mount, mount)).startswith(" zoom") == zoom

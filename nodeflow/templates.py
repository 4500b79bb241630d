"""The prebuilt graphs, found in a checkout (``templates/``) or in an installed wheel
(``<prefix>/share/nodeflow/templates``)."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from nodeflow.graph import Graph


def template_dirs() -> list[Path]:
    checkout = Path(__file__).resolve().parent.parent / "templates"
    installed = [Path(sys.prefix) / "share" / "nodeflow" / "templates",
                 Path(sysconfig.get_path("data")) / "share" / "nodeflow" / "templates"]
    return [d for d in [checkout, *installed] if d.is_dir()]


def list_templates() -> dict[str, Path]:
    """Template name (file stem) -> path; a checkout's copy wins over an installed one."""
    found: dict[str, Path] = {}
    for folder in template_dirs():
        for path in sorted(folder.glob("*.json")):
            found.setdefault(path.stem, path)
    return found


def template_path(name: str) -> Path:
    templates = list_templates()
    if name not in templates:
        known = ", ".join(sorted(templates)) or "none installed"
        raise KeyError(f"no template named '{name}' (templates: {known})")
    return templates[name]


def load_template(name: str) -> Graph:
    return Graph.load(template_path(name))

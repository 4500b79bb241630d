"""The built-in node catalogue. Every module here is scanned for Node classes, except the engine's."""

#: the engine (torch) defines no node; the registry's scan leaves it out
nodeflow_not_nodes = ("engine",)

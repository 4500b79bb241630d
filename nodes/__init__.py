"""The built-in node catalogue. Every module here is scanned for Node classes, except the engine's."""

#: the engine (torch) defines no node; the registry's scan leaves it out
nodeflow_not_nodes = ("engine",)

#: what running these nodes imports anyway (torch, and the engine's parts every training or inference uses): the
#: process every run, estimate and dataset doctor starts from imports them once
nodeflow_preload = ("torch", "torchvision", "nodes.engine.models", "nodes.engine.fit", "nodes.engine.pipeline")

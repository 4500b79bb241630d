"""The catalogue's port types and values, for plugins that build on the built-in nodes.

A plugin node that takes or gives a model or a dataset imports its types from here, so its ports
connect to the built-in ones in the editor::

    from nodes.ports import MODEL, ModelValue
"""

from nodes._values import FILES, IMAGES, METRICS, MODEL, PREDICTIONS, TRAINED_MODEL, ImageSet, ModelValue

__all__ = ["FILES", "IMAGES", "METRICS", "MODEL", "PREDICTIONS", "TRAINED_MODEL", "ImageSet", "ModelValue"]

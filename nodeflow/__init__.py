"""nodeflow: a visual pipeline editor for transfer learning on images."""

__version__ = "0.1.0"

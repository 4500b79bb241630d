"""Tiny PNG line charts drawn with PIL, so no plotting library is needed."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence


PALETTE = ((33, 150, 243), (244, 67, 54), (76, 175, 80), (255, 152, 0), (156, 39, 176), (0, 150, 136))


def line_plot_png(series: dict[str, Sequence[tuple[float, float]]], title: str = "", log_x: bool = False,
                  marker_x: float | None = None, size: tuple[int, int] = (480, 300)) -> bytes:
    """A small line chart as PNG bytes, drawn with PIL (no plotting library needed): one line
    per series, axes with min/max labels, an optional vertical marker (e.g. a suggested LR)."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 56, 12, 24, 30
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    fx = (lambda x: math.log10(x)) if log_x else (lambda x: x)
    points = [(fx(x), y) for pts in series.values() for x, y in pts if math.isfinite(y) and (x > 0 or not log_x)]
    if not points:
        return _png(image)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (fx(x) - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    pen.rectangle((left, top, width - right, height - bottom), outline=(160, 160, 160))
    pen.text((4, 4), title, fill="black")
    pen.text((4, top), f"{y1:.3g}", fill="black")
    pen.text((4, height - bottom - 10), f"{y0:.3g}", fill="black")
    label = (lambda v: f"1e{v:.1f}") if log_x else (lambda v: f"{v:.3g}")
    pen.text((left, height - bottom + 4), label(x0), fill="black")
    pen.text((width - right - 50, height - bottom + 4), label(x1), fill="black")
    if marker_x is not None and marker_x > 0:
        mx = at(marker_x, y0)[0]
        pen.line((mx, top, mx, height - bottom), fill=(120, 120, 120), width=1)
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        line = [at(x, y) for x, y in pts if math.isfinite(y) and (x > 0 or not log_x)]
        if len(line) > 1:
            pen.line(line, fill=colour, width=2)
        pen.text((width - right - 150, top + 4 + 12 * i), name, fill=colour)
    return _png(image)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

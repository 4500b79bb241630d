"""Quantities as a person reads them: durations and sizes, one way everywhere (the command line,
the editor, quotas, uploads)."""

from __future__ import annotations


def format_seconds(seconds: float | None) -> str:
    """A duration as a person reads it: 0.4 s, 42 s, 6.5 min, 1.2 h."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(count: int | None) -> str:
    """A size as a person reads it: 512 B, 3.0 KiB, 1.5 GiB; "-" for nothing."""
    if not count:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def rough_seconds(seconds: float) -> str:
    """A time left, roughly, as a progress line says it: 42 s, 6 min, 1.2 h."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def size_words(count: int) -> str:
    """A byte count in the largest binary unit that keeps it short: 8 GiB, 1.5 GiB, 512 MiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} B"


__all__ = ["format_bytes", "format_seconds", "rough_seconds", "size_words"]

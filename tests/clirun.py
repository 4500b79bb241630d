"""``nodeflow ARGS`` called in the test's own process: ``main`` returns the exit code and prints what the
command would, so a test about the output, not about a separate process, skips a Python start-up (that
imports torch anew). Tests about a process (exit status of a real one, signals, the shell's folder, a new
process finding the last run's results) still run ``python -m nodeflow.cli``."""

from __future__ import annotations

from types import SimpleNamespace


def nodeflow_here(capsys, argv: list[str]) -> SimpleNamespace:
    """``returncode``, ``stdout`` and ``stderr`` as ``subprocess.run(..., capture_output=True)`` gives them."""
    from nodeflow.cli import main

    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)

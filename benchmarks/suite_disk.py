"""How much disk the test suite holds at its peak: runs pytest with the system temp folder pointed at a fresh
folder (so pytest's base folder, and every file the tests and the processes they start write there, land in it)
and samples what that folder holds every couple of seconds.

    python benchmarks/suite_disk.py                       # the whole suite, as ./dev.sh test runs it
    python benchmarks/suite_disk.py tests/core -x         # ARGS go to pytest
    python benchmarks/suite_disk.py --json disk.json ...

Prints the peak, when it came, the largest folders at that moment, and what is left once pytest has ended.
Target: a peak under 3 GB (``PEAK_DISK_GB`` in tests/conftest.py, which pytest's header compares with the free
space), and nothing left after a green run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sizes(folder: Path, depth: int) -> tuple[int, dict[str, int]]:
    """Bytes on disk under ``folder``, and under each folder ``depth`` levels down (with workers, pytest's
    ``pytest-of-USER/pytest-N/popen-gwK/NAME``: one test's or one fixture's folder)."""
    parts: dict[str, int] = {}

    def walk(path: str, level: int) -> int:
        found = 0
        try:
            entries = list(os.scandir(path))
        except OSError:  # removed while we looked
            return 0
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    inner = walk(entry.path, level + 1)
                    if level == depth:
                        parts[os.path.relpath(entry.path, folder)] = inner
                    found += inner
                else:
                    found += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
        return found

    return walk(str(folder), 1), parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples (default 2)")
    parser.add_argument("--json", help="also write the figures here")
    args, pytest_args = parser.parse_known_args(argv)
    workers = os.environ.get("NODEFLOW_TEST_WORKERS", "auto")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(
        ["-n", workers, "--dist", "loadfile"] if workers != "0" else []), *pytest_args]
    depth = 3 if workers == "0" else 4
    with tempfile.TemporaryDirectory(prefix="nodeflow-suite-disk-") as scratch:
        folder = Path(scratch)
        peak, peak_at, peak_parts = 0, 0.0, {}
        samples = 0
        done = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            nonlocal peak, peak_at, peak_parts, samples
            while not done.wait(args.every):
                total, parts = sizes(folder, depth)
                samples += 1
                if total > peak:
                    peak, peak_at, peak_parts = total, time.monotonic() - started, parts

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        result = subprocess.run(command, cwd=ROOT, env={**os.environ, "TMPDIR": scratch})
        seconds = time.monotonic() - started
        done.set()
        watcher.join()
        left, _ = sizes(folder, depth)
    largest = sorted(peak_parts.items(), key=lambda item: -item[1])[:5]
    print()
    print(f"pytest {' '.join(pytest_args) or '(the whole suite)'}: exit {result.returncode} after "
          f"{seconds / 60:.1f} min, {samples} samples of the temp folder")
    print(f"peak on disk: {peak / 1e9:.2f} GB, {peak_at / 60:.1f} min in; the largest folders then:")
    for name, size in largest:
        print(f"  {size / 1e9:6.2f} GB  {name}")
    print(f"left once pytest ended: {left / 1e9:.2f} GB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "pytest_args": pytest_args, "exit": result.returncode, "seconds": round(seconds, 1),
            "peak_bytes": peak, "peak_seconds": round(peak_at, 1), "left_bytes": left,
            "largest": [{"folder": name, "bytes": size} for name, size in largest]}, indent=2))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())

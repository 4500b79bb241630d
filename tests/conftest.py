import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# CI runs the property-based tests reproducibly: the same examples on every run and every machine (drawn from
# each test's name, no example database carried between runs, no time-based deadline or health check that a
# busy machine trips), and a failure prints the blob that replays it (@reproduce_failure). A developer's run
# keeps exploring new examples (hypothesis's default profile). Recent hypothesis releases load a profile like
# this one by themselves when CI is set; older ones that pyproject allows do not. Loaded here, before the test
# modules are imported, so each test's own @settings(max_examples=...) is laid over this profile.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
if os.environ.get("CI", "").lower() in ("true", "1"):
    settings.load_profile("ci")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder

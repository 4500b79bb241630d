import multiprocessing.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Each pytest-xdist worker gets its share of the cores for torch, and so do the processes it starts: two workers
# that each spread a training over every core mostly wait on each other's threads (README, "Tests"). Set before
# any test module imports torch; a developer's own OMP_NUM_THREADS wins, a run in one process keeps torch's default.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS > 1:
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

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


# The suite's peak on disk (benchmarks/suite_disk.py measures it; README, "Tests")
PEAK_DISK_GB = 3


def pytest_report_header(config):
    """Where the run's files go and how much room is there: a full disk otherwise shows up as hundreds of
    unrelated errors half-way through."""
    folder = Path(tempfile.gettempdir())
    free = shutil.disk_usage(folder).free / 1e9
    warning = f"; less than the suite's peak of about {PEAK_DISK_GB} GB: expect 'No space left on device'" \
        if free < PEAK_DISK_GB else ""
    return f"temp folder: {folder}, {free:.1f} GB free{warning}"


@pytest.fixture(scope="session", autouse=True)
def temp_folder_of_the_run():
    """The system temp folder, for the code under test and the processes it starts, is a folder of this worker's
    own, removed when it ends: what a run leaves there does not pile up in /tmp, and nothing is shared with
    another run through a fixed name such as the default workspace. It sits right in the system temp folder, not
    deep in pytest's: Chromium's socket path there has to fit in 107 bytes. It goes at the worker's exit, after
    multiprocessing has removed its own folder there (the fork server's socket; its clean-up runs at -100)."""
    folder = Path(tempfile.mkdtemp(prefix="nodeflow-tests-"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))
        patch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
        yield folder
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True},
                                  exitpriority=-101)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder


# -- the cats-vs-dogs template run twice through the CLI (tests/core/test_runs_template.py,
#    tests/nodes/test_template.py): each test reads what it asserts from the one workspace ----------------------


@pytest.fixture(scope="session")
def template_twice(tmp_path_factory):
    """The shrunk template run once by ``nodeflow run`` in this process, then, in a new process, with two more
    blocks unfrozen and ``--target train_finetuned``: the workspace, the image folder and both JSON reports."""
    import json
    import subprocess
    from types import SimpleNamespace

    from nodeflow.cli import main
    from tests.imagegen import make_image_set
    from tests.nodes.conftest import SMALL, TEMPLATE

    base = tmp_path_factory.mktemp("template-twice")
    images = make_image_set(base / "images", ("circle", "stripes"), per_class=50, size=36, vary_size=True,
                            class_names=("cat", "dog"))
    workspace = base / "ws"

    def sets(**extra):
        values = {**SMALL, "dataset.root": str(images), **extra}
        return [arg for key, value in values.items()
                for arg in ("--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}")]

    run = ["--no-plugins", "run", str(TEMPLATE), "--workspace", str(workspace), "--device", "cpu", "--quiet"]
    assert main([*run, *sets(), "--report", str(base / "first.json")]) == 0
    second = subprocess.run([sys.executable, "-m", "nodeflow.cli", *run,
                             *sets(**{"finetune.unfreeze": ["block4", "block5"]}), "--target", "train_finetuned",
                             "--report", str(base / "second.json")], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)
    assert second.returncode == 0, second.stderr
    return SimpleNamespace(images=images, workspace=workspace, first=json.loads((base / "first.json").read_text()),
                           second=json.loads((base / "second.json").read_text()))


def pytest_collection_modifyitems(config, items):
    """Modules holding a test marked ``slow`` run first, each module's tests kept together and in order: on
    several workers the long trainings then start early, instead of ending the run alone on one worker."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)

"""CI runs the property-based tests reproducibly (tests/conftest.py chooses hypothesis's "ci" profile when
CI=true): two runs draw the same examples, while a developer's runs keep exploring new ones. A test's own
@settings are laid over the profile, so its example count and the profile's fixed seed both hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: what hypothesis itself reads as "in CI" (a developer's run has none of them)
CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "BUILDKITE", "CIRCLECI", "CIRRUS_CI",
                "CODEBUILD_BUILD_ID", "HEROKU_TEST_RUN_ID", "TEAMCITY_VERSION", "bamboo.buildKey",
                "__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI", "HYPOTHESIS_PROFILE")

PROBE = """
import json
import tests.conftest  # what pytest imports before any test module: it registers and loads the profile
from hypothesis import HealthCheck, given, settings, strategies as st

seen = []

@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=20))
def probe(text):
    seen.append(text)

probe()
chosen = probe._hypothesis_internal_use_settings
print(json.dumps({"seen": seen, "max_examples": chosen.max_examples, "derandomize": chosen.derandomize,
                  "database": chosen.database is not None, "print_blob": chosen.print_blob,
                  "deadline": chosen.deadline is not None}))
"""


def probe(tmp_path, ci: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    if ci:
        env["CI"] = "true"
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**env, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ci_draws_the_same_examples_every_run_and_a_developer_explores(tmp_path):
    first, second = probe(tmp_path, ci=True), probe(tmp_path, ci=True)
    assert first["seen"] == second["seen"] and len(set(first["seen"])) > 10
    assert first["max_examples"] == 30 and first["derandomize"] and not first["database"] and first["print_blob"]
    assert not first["deadline"]  # a busy CI machine cannot turn a slow example into a failure

    mine, again = probe(tmp_path, ci=False), probe(tmp_path, ci=False)
    assert mine["seen"] != again["seen"] and not mine["derandomize"] and mine["database"]

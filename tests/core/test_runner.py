"""The run driver: the one place a run's final status is decided, and the words runs are told in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodeflow.reports import NodeReport, RunReport
from nodeflow.runner import final_status
from nodeflow.words import format_bytes, format_seconds, rough_seconds, size_words

STATUSES = st.sampled_from(["ran", "cached", "failed", "skipped", "stopped"])


def report_of(statuses: list[str], interrupted: bool) -> RunReport:
    nodes = {f"n{i}": NodeReport(s, error="boom" if s == "failed" else None) for i, s in enumerate(statuses)}
    return RunReport(ok=all(s in ("ran", "cached") for s in statuses), nodes=nodes, interrupted=interrupted)


@given(st.lists(STATUSES, max_size=5), st.booleans(), st.booleans(), st.booleans(),
       st.sampled_from([None, "cancelled"]))
def test_a_run_ends_in_one_status_and_a_cancel_wins_over_everything(statuses, interrupted, died, cancelled,
                                                                      untouched):
    report = report_of(statuses, interrupted)
    status, error = final_status(report, died, cancelled, untouched)
    assert status in ("done", "failed", "stopped", "interrupted", "cancelled")
    if cancelled:
        assert status == "cancelled"
    elif untouched and interrupted and all(s == "skipped" for s in statuses):
        assert status == "cancelled"
    elif died:
        assert status == "interrupted"
        assert error == ("boom" if "failed" in statuses else "the worker process stopped")
    else:
        assert status == ("stopped" if interrupted else "done" if report.ok else "failed")
        assert error is None


def test_durations_and_sizes_read_as_a_person_says_them():
    assert [format_seconds(s) for s in (None, 0.42, 4.2, 42, 390, 7200)] == \
        ["-", "0.42 s", "4.2 s", "42 s", "6.5 min", "2.0 h"]
    assert [format_bytes(n) for n in (None, 0, 512, 3 * 2**10, 3 * 2**20 // 2, 5 * 2**30)] == \
        ["-", "-", "512 B", "3.0 KiB", "1.5 MiB", "5.0 GiB"]
    assert [size_words(n) for n in (512, 8 * 2**30, 3 * 2**29, 2**40)] == ["512 B", "8 GiB", "1.5 GiB", "1 TiB"]
    assert [rough_seconds(s) for s in (0.2, 42, 390, 7200)] == ["1 s", "42 s", "6 min", "2.0 h"]

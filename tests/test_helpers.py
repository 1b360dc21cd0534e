"""The small shared helpers: generated page sections, timing, progress bars
and the notebooks' quiet logging."""

import contextlib
import io
import logging
import sys
import warnings

import pytest

from carafe_lab.experiments import quiet
from carafe_lab.readme import read_section, write_section
from carafe_lab.timing import cuda_event_seconds, median_seconds

MARKERS = ("<!-- x:start -->", "<!-- x:end -->")


def test_readme_section_round_trip(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{MARKERS[0]}\nold\n{MARKERS[1]}\ntail\n")
    write_section(readme, MARKERS, "new table\n\n")
    assert readme.read_text() == f"head\n{MARKERS[0]}\nnew table\n{MARKERS[1]}\ntail\n"
    assert read_section(readme, MARKERS) == "\nnew table\n"
    with pytest.raises(ValueError):
        read_section(readme, ("<!-- y:start -->", "<!-- y:end -->"))


def test_median_seconds_warms_up_then_times_each_call():
    calls = []
    seconds = median_seconds(lambda: calls.append(1), "cpu", repeat=5)
    assert len(calls) == 6 and 0 <= seconds < 1


def test_cuda_event_seconds_times_back_to_back_calls():
    """Events around each round of calls, one synchronisation per round, no
    event inside a round; the median round's milliseconds per call, in
    seconds. A stand-in event class records the calls on a fake GPU clock
    that each call of fn advances (rounds of 1, 4 and 2 ms per call)."""
    log, clock, cost = [], [0.0], iter([1.0] * 3 + [1.0] * 4 + [4.0] * 4 + [2.0] * 4)

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = clock[0]
            log.append("record")

        def synchronize(self):
            log.append("sync")

        def elapsed_time(self, end):
            return end.at - self.at

    def fn():
        clock[0] += next(cost)
        log.append("call")

    seconds = cuda_event_seconds(fn, repeat=4, rounds=3, warmup=3, event=Event)
    assert seconds == pytest.approx(2e-3)  # rounds of 1, 4, 2 ms per call
    round_ = ["record"] + ["call"] * 4 + ["record", "sync"]
    assert log == ["call"] * 3 + round_ * 3


def test_welch_difference_matches_scipy_and_is_strict_with_few_seeds():
    """stats.difference: Welch's t-test from (mean, std, n), as scipy's
    ttest_ind(equal_var=False) computes it from the values; with two seeds a
    difference of 3 standard errors is not resolved (the z-test's '2 SE' rule
    would have called it so)."""
    import statistics

    scipy_stats = pytest.importorskip("scipy.stats")
    from carafe_lab.stats import difference

    def summary(values):
        return statistics.mean(values), statistics.stdev(values), len(values)

    a, b = [35.0, 36.5, 37.0], [30.0, 31.0, 29.5, 30.2]
    diff, se, resolved, p = difference(summary(a), summary(b))
    assert p == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert diff == pytest.approx(statistics.mean(a) - statistics.mean(b)) and resolved
    # two seeds each, difference = 3 SE: t(df≈2) p ≈ 0.1 -> not resolved
    diff, se, resolved, p = difference((3.0, 1.0, 2), (0.0, 1.0, 2))
    assert diff / se == pytest.approx(3.0) and not resolved and 0.05 < p < 0.2
    assert difference((1.0, 0.0, 1), (0.0, 1.0, 3)) is None  # one seed: no test
    assert difference((1.0, 0.0, 2), (1.0, 0.0, 2))[2] is False  # identical, zero spread


def test_progress_bar_without_ipywidgets_is_text_and_does_not_warn(monkeypatch):
    """tqdm.auto warns (TqdmWarning) in a notebook where ipywidgets is missing."""
    pytest.importorskip("tqdm", reason="progress bars are tqdm's (the lab extra)")
    from tqdm.std import tqdm as text_bar

    from carafe_lab import progress

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # its import raises ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert progress.bar_class() is text_bar
        progress.tqdm(range(2), disable=True).close()


def test_known_warnings_are_filtered_and_no_others():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.filter_known_warnings()
        warnings.warn("pkg_resources is deprecated as an API. See ...", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]


def test_log_writer_logs_each_printed_line(caplog):
    logger = logging.getLogger("carafe_lab.test_log_writer")
    writer = quiet.LogWriter(logger)
    with caplog.at_level(logging.INFO, logger=logger.name):
        with contextlib.redirect_stdout(writer):
            print("loading annotations into memory...")
            print("Done (t=0.01s)\ncreating", end="")
            print(" index...")
            print("last", end="")
        writer.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "loading annotations into memory...",
        "Done (t=0.01s)",
        "creating index...",
        "last",
    ]


def test_console_errors_only_leaves_the_log_file_everything(tmp_path):
    logger = logging.getLogger("carafe_lab.test_console_errors_only")
    logger.setLevel(logging.INFO)
    console = logging.StreamHandler(io.StringIO())
    log_file = logging.FileHandler(tmp_path / "run.log")
    logger.addHandler(console)
    logger.addHandler(log_file)
    try:
        assert quiet.console_errors_only(logger) is logger
        logger.info("the config dump")
        logger.warning("a deprecation notice")
        logger.error("a failure")
    finally:
        logger.removeHandler(console)
        logger.removeHandler(log_file)
        log_file.close()
    assert console.stream.getvalue() == "a failure\n"
    assert (tmp_path / "run.log").read_text().splitlines() == [
        "the config dump",
        "a deprecation notice",
        "a failure",
    ]

"""The small shared helpers: README sections and timing."""

import pytest

from carafe._readme import read_section, write_section
from carafe.timing import median_seconds

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

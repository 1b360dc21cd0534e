"""Generated sections of a markdown page (the docs pages under docs/): the
text between a pair of HTML comment markers (e.g. ``<!-- bench:start -->`` /
``<!-- bench:end -->``), written by the report commands and read back by the
tests that keep them in sync."""

from pathlib import Path


def read_section(page: Path, markers) -> str:
    """The text between markers (start, end) in page."""
    start, end = markers
    content = Path(page).read_text()
    return content[content.index(start) + len(start) : content.index(end)]


def write_section(page: Path, markers, text: str) -> str:
    """Replace the text between markers with text (on lines of its own);
    returns the page's new content."""
    start, end = markers
    content = Path(page).read_text()
    a, b = content.index(start) + len(start), content.index(end)
    new = content[:a] + "\n" + text.rstrip("\n") + "\n" + content[b:]
    Path(page).write_text(new)
    return new

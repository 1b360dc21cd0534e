"""Generated sections of README.md: the text between a pair of HTML comment
markers (e.g. ``<!-- bench:start -->`` / ``<!-- bench:end -->``), written by
the report commands and read back by the tests that keep them in sync."""

from pathlib import Path


def read_section(readme: Path, markers) -> str:
    """The text between markers (start, end) in readme."""
    start, end = markers
    content = Path(readme).read_text()
    return content[content.index(start) + len(start):content.index(end)]


def write_section(readme: Path, markers, text: str) -> str:
    """Replace the text between markers with text (on lines of its own);
    returns the new README content."""
    start, end = markers
    content = Path(readme).read_text()
    a, b = content.index(start) + len(start), content.index(end)
    new = content[:a] + "\n" + text.rstrip("\n") + "\n" + content[b:]
    Path(readme).write_text(new)
    return new

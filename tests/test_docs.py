"""The README stays short and its links lead somewhere; the docs pages are
the ones mkdocs.yml lists; every generated table sits in its docs page; the
version and the changelog agree. (The strict mkdocs build itself is `make
docs`, which CI runs.)"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

#: marker name -> the docs page holding that generated table
GENERATED = {
    "bench": "kernels.md",
    "export": "export.md",
    "abl": "ablations.md",
    "det": "detection.md",
}


def relative_links(text):
    """The targets of markdown links and images that are not URLs or anchors."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:|#", t)]


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move detail into docs/ (limit 250)"


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "make demo",
        "make test",
    ]


def heading_anchors(markdown):
    """The anchors GitHub (and mkdocs' toc) give the page's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def test_readme_links_lead_to_files_and_headings():
    text = README.read_text()
    links = relative_links(text)
    assert any(t.startswith("docs/") for t in links), "the README links to no docs page"
    for target in links:
        file, _, anchor = target.partition("#")
        path = ROOT / file
        assert path.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in heading_anchors(path.read_text()), (
                f"README.md links to {target}: {file} has no such heading"
            )


def test_mkdocs_nav_lists_every_page():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = [next(iter(item.values())) for item in config["nav"]]
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(listed) == pages
    assert config["docs_dir"] == "docs"


def test_generated_tables_live_in_their_docs_page():
    for name, page in GENERATED.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        for path in [README, *DOCS.glob("*.md")]:
            text = path.read_text()
            want = 1 if path == DOCS / page else 0
            assert text.count(start) == want and text.count(end) == want, (path, name)


def test_version_and_changelog_agree():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # written once: pyproject reads carafe/__init__.py's
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "carafe.__version__"}
    init = (ROOT / "carafe" / "__init__.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', init).group(1)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    if ".dev" in version:  # in development: the Unreleased section is its entry
        return
    assert re.search(
        rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M
    ), f"CHANGELOG.md has no section for {version}"

"""The documentation holds together: README.md is a front page (at most 300 lines), docs/README.md
indexes every page, and no relative link in README.md or docs/ is dead (files, and #anchors into
markdown files checked against their headings with GitHub's slug rules)."""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

LINK = re.compile(r"(?<!\\)\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans (links there are code, not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation except '-' and '_'
    dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in a markdown page, with GitHub's -1, -2, ... for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text())):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> list[str]:
    return LINK.findall(_prose(page.read_text()))


def test_slug_follows_githubs_rules():
    assert slug("At the paper's scale: full Fashion-MNIST") == "at-the-papers-scale-full-fashion-mnist"
    assert slug("Paper mode vs the authors' code at Symmetry-80 % (measured 2026-11-27)") == \
        "paper-mode-vs-the-authors-code-at-symmetry-80--measured-2026-11-27"
    assert slug("timm `train.py` habits") == "timm-trainpy-habits"
    assert slug("JoCoR or DivideMix?") == "jocor-or-dividemix"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_relative_link_is_dead(page):
    dead = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / unquote(path)).resolve() if path else page
        if not file.exists():
            dead.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and unquote(anchor).lower() not in anchors(file):
            dead.append(f"{target}: no heading with anchor #{anchor} in {file.relative_to(ROOT)}")
    assert not dead, f"dead links in {page.relative_to(ROOT)}:\n" + "\n".join(dead)


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/ (at most 300)"
    assert "docs/README.md" in {target.partition("#")[0] for target in links(ROOT / "README.md")}


def test_docs_index_links_every_page():
    index = DOCS / "README.md"
    linked = {(DOCS / target.partition("#")[0]).resolve() for target in links(index)
              if not EXTERNAL.match(target) and target.partition("#")[0]}
    pages = [p for p in [*DOCS.glob("*.md"), DOCS / "results" / "README.md"] if p != index]
    missing = [str(p.relative_to(ROOT)) for p in sorted(pages) if p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link: {', '.join(missing)}"


def test_anchor_checking_catches_a_dead_link(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## JoCoR or DivideMix?\n\n```\n# not a heading\n```\n")
    assert anchors(tmp_path / "a.md") == {"title", "jocor-or-dividemix"}
    (tmp_path / "b.md").write_text("[ok](a.md#jocor-or-dividemix) [code `x`](a.md) `[no](x.md)`\n"
                                   "[web](https://example.org) [gone](a.md#not-a-heading)\n")
    assert links(tmp_path / "b.md") == ["a.md#jocor-or-dividemix", "a.md", "https://example.org",
                                        "a.md#not-a-heading"]


def test_readme_layout_names_every_module():
    """The README's Layout block names every subpackage and module of jocor_plugin (a new module
    that isn't there fails), so the front page's map stays complete."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[layout.index("```"):layout.index("```", layout.index("```") + 3)]
    package = ROOT / "jocor_plugin"
    missing = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
               if p.name != "__init__.py" and "metrics" not in p.relative_to(package).parts
               and not re.search(rf"\b{re.escape(p.name)}\b", layout)]
    missing += [f"{d.name}/" for d in sorted(package.iterdir()) if d.is_dir() and (d / "__init__.py").exists()
                and f"{d.name}/" not in layout]
    assert not missing, f"README.md's Layout doesn't name: {', '.join(missing)}"

"""The user documentation as one text: README.md, then every page of docs/, each page opened by a
`## <file>` line, so a section of one page never runs into the next page's."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documentation() -> str:
    return "\n".join(f"\n## {page.relative_to(ROOT)}\n\n{page.read_text()}" for page in PAGES)

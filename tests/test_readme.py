"""The README's commands do not rot: CI runs the Quickstart as written, and the front page stays
a front page (the details live in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def quickstart_lines() -> list[str]:
    """The command lines of the code block after the README's ``ci: quickstart`` marker."""
    found = re.search(r"<!-- ci: quickstart.*?-->\n```bash\n(.*?)\n```", README.read_text(), re.DOTALL)
    assert found is not None, "README.md has no code block after its 'ci: quickstart' marker"
    return [line for line in found.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_quickstart_as_written():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    lines = quickstart_lines()
    assert lines == ["python -m toconv.train preset=quickstart"]
    assert all(line in ci for line in lines), f"CI does not run {lines} as written"


def test_front_page_is_short_and_links_the_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    links = set(re.findall(r"\]\((docs/[\w-]+\.md)", text))
    assert len(links) >= 3 and all((ROOT / link).is_file() for link in links)
    assert "/work/" not in text and not any("/work/" in p.read_text() for p in (ROOT / "docs").glob("*.md"))

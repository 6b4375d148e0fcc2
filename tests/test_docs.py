"""The README and docs/ as a user reads them: every relative link resolves (file and heading), and every `ponder ...`
command line they quote parses with the real parser (`ponder.cli.parse`, as `ponder` reads it: flags, subcommands and where overrides
may go, not a run)."""

import re
import shlex
from pathlib import Path

import pytest

from ponder import UserError
from ponder.arguments import parse

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens (code fences skipped)."""
    text = FENCE.sub("", text)
    out = set()
    for title in re.findall(r"^#{1,6} (.+)$", text, re.M):
        out.add(re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-"))
    return out


def broken_links(text: str, here: Path) -> list[str]:
    """The links of `text` (a page at `here`) that point at no file or no heading."""
    bad = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here
            continue
        path, _, anchor = target.partition("#")
        page = (here.parent / path).resolve() if path else here
        if not page.exists():
            bad.append(f"{here.name}: {target} (no such file)")
        elif anchor and (page.suffix != ".md" or anchor not in anchors(page.read_text())):
            bad.append(f"{here.name}: {target} (no such heading)")
    return bad


def commands(text: str) -> list[str]:
    """Every `ponder ...` line of the page's code blocks (continuations joined, comments dropped)."""
    out = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("ponder "):
                out.append(line)
    return out


def parses(line: str) -> str:
    """'' if the parser accepts the command line, else why not."""
    try:
        argv = shlex.split(line, comments=True)[1:]
    except ValueError as e:
        return str(e)
    try:
        parse(argv)
    except UserError as e:  # the parser's one-line error
        return str(e)
    except SystemExit as e:  # --help
        return "" if e.code == 0 else f"exit {e.code}"
    return ""


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    assert broken_links(page.read_text(), page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_quoted_command_parses(page, capsys):
    failed = [(line, why) for line in commands(page.read_text()) if (why := parses(line))]
    assert failed == [], capsys.readouterr().err


def test_the_checks_fail_on_planted_errors(capsys):
    page = ROOT / "docs" / "cli.md"
    assert broken_links("see [x](docs/nowhere.md)", ROOT / "README.md") == ["README.md: docs/nowhere.md (no such file)"]
    assert broken_links("see [x](cli.md#no-such-heading)", page) == ["cli.md: cli.md#no-such-heading (no such heading)"]
    assert broken_links("see [x](cli.md#the-cli) and [y](#the-cli)", page) == []
    assert parses("ponder train demo --out runs/x") == ""
    assert parses("ponder train demo --no-such-flag") and parses("ponder frobnicate")
    assert commands("```bash\nponder eval runs/x \\\n  --adaptive   # note\n```\n") == ["ponder eval runs/x    --adaptive   # note"]
    capsys.readouterr()


def test_the_readme_is_a_map():
    """The README stays short and points into docs/ for every page there."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name

"""The documentation as a whole: the site builds strictly, every page is in it, links resolve
and name headings that exist, the README is short and links into the site, and the harness
that runs every page's commands (tests/docs_harness.py) sees every page and kind of command."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from docs_harness import GROUPS, ONE_POINT, PAGES, ROOT, TRAIN, commands_of, ran_before, tiny
from pages import plain_python

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKDOWN = [README, *sorted(DOCS.rglob("*.md"))]


def _nav_pages(nav) -> list[str]:
    out = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def _mkdocs_config() -> dict:
    # mkdocs.yml holds no Python tags; the safe loader reads it
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_the_site_builds_strictly_offline(tmp_path):
    """Broken links, missing API references and docstring errors fail the build (strict)."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    built = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    assert {"index.html", "tutorial/index.html", "api/training/index.html", "method/index.html"} <= built
    assert "<img" in (tmp_path / "site" / "tutorial" / "index.html").read_text()  # the executed outputs, figures too


def test_a_broken_link_or_reference_fails_the_build(tmp_path):
    """The site's configuration is strict where it matters: a copy of the docs with a link to a
    missing page, and one with an API reference to a missing module, each fail to build."""
    for broken in ("[gone](no-such-page.md)", "::: interventions.no_such_module"):
        shutil.copytree(DOCS, tmp_path / "docs", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.ipynb"))
        config = _mkdocs_config()
        config["docs_dir"] = str(tmp_path / "docs")
        config["nav"] = [n for n in config["nav"] if n != {"Tutorial": "tutorial.ipynb"}]
        (tmp_path / "docs" / "concepts.md").write_text((DOCS / "concepts.md").read_text() + f"\n{broken}\n")
        (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
        done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml"),
                               "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
        assert done.returncode != 0, broken
        assert "concepts.md" in done.stderr or "no_such_module" in done.stderr


def test_every_page_is_in_the_site_and_run_by_the_suite():
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")} | {"tutorial.ipynb"}
    in_nav = set(_nav_pages(_mkdocs_config()["nav"]))
    assert pages == in_nav
    run = {p for p in PAGES}
    assert {f"docs/{p}" for p in pages if not p.startswith("api/") and p.endswith(".md")} | {"README.md"} == run
    assert len(run) == sum(len(group) for group in GROUPS.values())  # each page in one group


def test_every_command_runs_in_exactly_one_group():
    """A command printed on pages of two groups runs in the first only; none is lost."""
    key = lambda c: (c.kind, c.text)  # noqa: E731
    runs = [key(c) for g in GROUPS for c in commands_of(GROUPS[g], ran=ran_before(g)) if c.kind != "console"]
    assert len(runs) == len(set(runs))
    assert set(runs) == {key(c) for c in commands_of(PAGES) if c.kind != "console"}
    assert ("shell", "bash run.sh train") in ran_before("analyses")  # the README's, also in docs/interpret.md


def test_the_readme_is_short_and_links_into_the_site():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", text))
    assert {"docs/getting-started.md", "docs/tutorial.ipynb", "docs/method.md", "docs/results.md"} <= linked


def test_the_pages_have_commands_of_every_kind():
    commands = commands_of(PAGES)
    assert {c.kind for c in commands} == {"shell", "console", "python"}
    placeholders = [f"{c.page}:{c.line} {c.text}" for c in commands
                    if c.kind != "python" and re.search(r"<[a-z][^>]*>|\bDIR\b|\.\.\.", c.text)]  # fmt: skip
    assert placeholders == [], "placeholders cannot run as printed"


def test_plain_python_lines_run_in_the_warm_interpreter_and_shell_lines_in_bash():
    quoted = """python train.py -m 'hydra.sweeper.space.objective.margin="uniform(0,10)"' objective.lambda_m=0"""
    assert plain_python(quoted) == ({}, shlex.split(quoted))
    assert plain_python("OMP_NUM_THREADS=1 python x.py --n 2") == ({"OMP_NUM_THREADS": "1"}, ["python", "x.py", "--n", "2"])
    for shell in ("python x.py | tail -1", "python x.py > out.txt", "python x.py $(cat args)", "(python x.py)",
                  "python x.py 'a' && echo done", "bash run.sh train", "source .venv/bin/activate"):  # fmt: skip
        assert plain_python(shell) is None, shell


def test_no_page_hides_a_command_in_an_indented_block():
    """The harness runs fenced blocks only; an indented block would escape it."""
    hidden = []
    for page in MARKDOWN:
        in_fence, previous = False, ""
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("```"):
                in_fence = not in_fence
            elif not in_fence and line.startswith("    ") and not previous.strip() and re.match(r"\s+(python|bash) ", line):
                hidden.append(f"{page.name}:{number}")
            previous = line
    assert hidden == []


def test_tiny_appends_sizes_and_narrows_sweep_presets():
    assert tiny("python train.py task=ioi") == "python train.py task=ioi " + " ".join(TRAIN)
    narrowed = shlex.split(tiny("python train.py -m experiment=paper_grid"))
    assert "objective.margin=0" in narrowed and "trainer.max_epochs=1" in narrowed
    assert set(ONE_POINT) <= set(narrowed)
    assert tiny("OMP_NUM_THREADS=1 python -m interventions circuits score --out x").endswith(
        "--quick --benchmarks count_x --methods activscalar,random")
    assert tiny("python -m interventions circuits score --benchmarks sort --out x").endswith(
        "--benchmarks sort --out x --quick --methods activscalar,random")
    assert tiny("python benchmarks/run.py summary") == "python benchmarks/run.py summary"
    assert tiny("python -m interventions toyworld report") == "python -m interventions toyworld report"


def test_links_resolve_inside_the_repository():
    """Relative links of the README and the docs point at files of the repository (a clone has
    nothing outside it)."""
    broken = []
    for page in MARKDOWN:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (page.parent / target).resolve()
            if not resolved.exists() or ROOT.resolve() not in resolved.parents:
                broken.append(f"{page.name}: {target}")
    assert broken == []


def _anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives a markdown page: lower case, punctuation dropped,
    spaces as hyphens, a repeated one numbered -1, -2, ... (fenced code is not a heading)."""
    seen: dict[str, int] = {}
    anchors = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for heading in re.findall(r"^#+\s+(.*?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_links_to_a_heading_name_one_that_exists():
    broken = []
    for page in MARKDOWN:
        for target, fragment in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
            linked = (page.parent / target).resolve() if target else page
            if linked.suffix == ".md" and linked.exists() and fragment not in _anchors(linked):
                broken.append(f"{page.name}: {target}#{fragment}")
    assert broken == []

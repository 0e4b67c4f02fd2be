"""The documentation (README.md and docs/) cannot drift from the code: the site builds in strict mode,
the examples marked `<!-- run -->` run, and every module, command and file the pages name exists.
How to mark an example: docs/contributing.md, "These pages"."""

from __future__ import annotations

import ast
import dataclasses
import functools
import glob
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from pipelines.cli import COMMANDS
from tests.helpers.environment import ROOT, env

DOCS = ROOT / "docs"
SOURCES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
MARKER = re.compile(r"^<!--\s*(?:(?P<run>run)|file:\s*(?P<file>[\w.-]+))\s*-->$")
RUNNABLE = {"sh", "python"}
BLOCK_TIMEOUT_S = 120
# Folders of the repository: a path in backticks that starts with one of them must exist.
REPO_FOLDERS = ("pipelines", "model", "transforms", "templates", "benchmarks", "tests", "notebooks")
REPO_FOLDERS += ("docs", ".ci")
REPO_PATH = re.compile(rf"^(?:{'|'.join(re.escape(f) for f in REPO_FOLDERS)})/[^\s]*$")
PACKAGES = ("pipelines", "model", "transforms", "benchmarks")
DOTTED = re.compile(rf"^((?:{'|'.join(PACKAGES)})(?:\.\w+)+)(?:\(.*\))?$")
# `model.json` is a file, not the module `model.json`.
FILE_SUFFIXES = {"json", "keras", "md", "png", "py", "tif", "txt", "vrt", "yaml", "yml"}
PYTHON_M = re.compile(r"\bpython -m ([a-z_][a-z0-9_.]*)")
COMMAND = re.compile(r"(?:^|[\s/(])terrabeam ([a-z][\w-]*)", re.M)


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block and the marker on the line before it, if any."""

    source: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    run: bool = False
    file: str | None = None

    def __str__(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}"


@functools.cache
def tokens(source: Path) -> list:
    return MarkdownIt("commonmark").parse(source.read_text(encoding="utf-8"))


def markers(source: Path) -> list[tuple[int, re.Match]]:
    """(line index after the marker, match) for every `<!-- run -->` / `<!-- file: NAME -->` line."""
    found = []
    for token in tokens(source):
        if token.type == "html_block":
            match = MARKER.match(token.content.strip())
            if match:
                found.append((token.map[1], match))
    return found


def blocks(source: Path) -> list[Block]:
    marked = dict(markers(source))
    found = []
    for token in tokens(source):
        if token.type == "fence":
            match = marked.get(token.map[0])
            found.append(
                Block(
                    source,
                    token.map[0] + 1,
                    token.info.split()[0] if token.info.strip() else "",
                    token.content,
                    run=bool(match and match["run"]),
                    file=match["file"] if match else None,
                )
            )
    return found


def inline_code(source: Path) -> list[str]:
    spans = []
    for token in tokens(source):
        spans += [child.content for child in token.children or () if child.type == "code_inline"]
    return spans


def typed_text(source: Path) -> str:
    """What a reader might type: the code blocks less their comments, and the inline code spans."""
    code = [re.sub(r"(?m)(^|\s)#.*$", "", b.text) for b in blocks(source)]
    return "\n".join(code + inline_code(source))


def runnable_sources() -> list[Path]:
    return [s for s in SOURCES if any(b.run for b in blocks(s))]


# --- the site ---------------------------------------------------------------------------------------
def test_the_site_builds_in_strict_mode(tmp_path):
    """A broken link or anchor, a page left out of the navigation, a missing snippet: each fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
        + ["--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        env=env(NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    # Getting started includes the README's quick start: the snippet was found and rendered.
    started = (tmp_path / "site" / "getting-started" / "index.html").read_text(encoding="utf-8")
    assert "creates .venv if needed and runs the test suite" in started


def test_the_readme_lists_every_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS.rglob("*.md")):
        name = page.relative_to(DOCS).as_posix()
        if name != "index.md":
            assert f"(docs/{name})" in readme, f"README.md's Documentation table does not link docs/{name}"


def test_the_readme_links_point_at_files_that_exist():
    for token in tokens(ROOT / "README.md"):
        for child in token.children or ():
            href = child.attrs.get({"link_open": "href", "image": "src"}.get(child.type, ""))
            if not href or re.match(r"^(?:[a-z]+:|#)", str(href)):
                continue
            target = ROOT / str(href).split("#")[0]
            assert target.exists(), f"README.md links {href}, which does not exist"


# --- names the pages use ----------------------------------------------------------------------------
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_modules_and_commands_named_exist(source):
    for module in sorted(set(PYTHON_M.findall(source.read_text(encoding="utf-8")))):
        assert module_file(module), f"{source.name} runs `python -m {module}`, which does not exist"
    for command in sorted(set(COMMAND.findall(typed_text(source)))):
        assert command in COMMANDS, (
            f"{source.name} uses `terrabeam {command}`, which is not a command ({', '.join(COMMANDS)})"
        )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_files_and_python_names_in_backticks_exist(source):
    for span in inline_code(source):
        span = span.strip()
        if REPO_PATH.match(span):
            pattern = re.sub(r"<[^>]+>|\.\.\.|…", "*", span.rstrip("/"))  # placeholders match anything
            assert glob.glob(str(ROOT / pattern)), f"{source.name} names `{span}`, which does not exist"
        elif DOTTED.match(span) and DOTTED.match(span)[1].rsplit(".", 1)[1] not in FILE_SUFFIXES:
            dotted = DOTTED.match(span)[1]
            assert python_name_exists(dotted), f"{source.name} names `{span}`: {dotted} does not exist"


def module_file(dotted: str) -> Path | None:
    """The file of a module of this repository (or of the Python it runs on), without importing it."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py", base / "__main__.py"):
        if candidate.is_file():
            return candidate
    if dotted.split(".")[0] not in PACKAGES:
        spec = importlib.util.find_spec(dotted)
        return Path(spec.origin) if spec and spec.origin else None
    return None


def python_name_exists(dotted: str) -> bool:
    """`package.module` or `package.module.name`: the module exists and defines or imports the name."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = module_file(".".join(parts[:cut]))
        if path is None or path.name == "__main__.py":
            continue
        rest = parts[cut:]
        if not rest:
            return True
        return rest[0] in top_level_names(path)
    return False


def top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


# --- the examples -----------------------------------------------------------------------------------
def test_every_marker_stands_right_before_a_code_block():
    for source in SOURCES:
        fences = {b.line - 1 for b in blocks(source)}  # 0-based line of each opening fence
        for after, match in markers(source):
            assert after in fences, (
                f"{source.relative_to(ROOT)}:{after}: {match[0]!r} is not on the line right before a code block"
            )
        for block in blocks(source):
            if block.run:
                assert block.lang in RUNNABLE, (
                    f"{block}: only {sorted(RUNNABLE)} blocks run, not {block.lang!r}"
                )


def test_the_examples_that_must_run_are_marked():
    """The quick start's --help lines, a classes file read back, predict's and view's --help."""
    run = {s.relative_to(ROOT).as_posix(): "\n".join(b.text for b in blocks(s) if b.run) for s in SOURCES}
    assert "terrabeam --help" in run["README.md"] and "terrabeam extract --help" in run["README.md"]
    assert "resolve_label_scheme(" in run["docs/labels.md"]
    assert any(b.file for b in blocks(DOCS / "labels.md")), "labels.md writes its classes file"
    assert "terrabeam predict --help" in run["docs/prediction.md"]
    assert "terrabeam view --help" in run["docs/viewer.md"]


@pytest.mark.slow
@pytest.mark.parametrize("source", runnable_sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_marked_examples_run(source, tmp_path):
    """A page's marked blocks run in order in one fresh folder, `terrabeam` being this checkout's."""
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "terrabeam"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pipelines.cli "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    environment = env(PATH=path, PYTHONPATH=str(ROOT), TERRABEAM_CACHE=str(tmp_path / "cache"))
    for block in blocks(source):
        if block.file:
            (work / block.file).write_text(block.text, encoding="utf-8")
        if not block.run:
            continue
        if block.lang == "sh":
            argv = ["bash", "-euo", "pipefail", "-c", block.text]
        else:
            script = tmp_path / f"block_{block.line}.py"
            script.write_text(block.text, encoding="utf-8")
            argv = [sys.executable, str(script)]
        result = subprocess.run(
            argv, cwd=work, env=environment, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
        )
        assert result.returncode == 0, (
            f"{block}: the example failed (exit status {result.returncode}):\n{block.text}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )

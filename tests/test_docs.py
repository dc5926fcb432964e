"""The documentation: generated reference pages are complete and current, links and anchors resolve in the
files, examples run, the build is strict-clean.

The generators live in ``docs/_gen``; ``python docs/_gen/docgen.py`` writes their output into the committed
pages (``test_generated_docs_are_current`` fails when it is stale). The fast tests call the generators
directly; ``test_mkdocs_build_strict`` (slow) runs ``mkdocs build --strict`` and checks the HTML. The commands
the pages show are run by ``tests/test_docs_commands.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GEN = DOCS / "_gen"
if str(GEN) not in sys.path:
    sys.path.insert(0, str(GEN))

import docgen  # noqa: E402
import docgen_benchmarks  # noqa: E402
import docgen_catalogue  # noqa: E402
import docgen_cli  # noqa: E402
import docgen_common  # noqa: E402
import docgen_recipes  # noqa: E402

from hourglass.registry import FFN, REGISTRIES  # noqa: E402
from hourglass.spec import Spec  # noqa: E402


def _ids(text: str) -> set[str]:
    """HTML ids in Markdown (``{#id}`` heading attributes, ``<a id="...">``) or in HTML."""
    return set(re.findall(r'\{#([\w-]+)\}', text)) | set(re.findall(r'id="([^"]+)"', text))


@pytest.fixture(scope="module")
def catalogue() -> str:
    return docgen_catalogue.catalogue_markdown()


@pytest.fixture(scope="module")
def recipes_page() -> str:
    return docgen_recipes.recipes_markdown(ROOT)


@pytest.fixture(scope="module")
def cli_page() -> str:
    return docgen_cli.cli_markdown()


def _expected_component_ids() -> list[tuple[str, str, list[str]]]:
    """(family, name, ids of its own option rows) for every registered component."""
    out = []
    for family, registry in REGISTRIES.items():
        for name in registry.names():
            spec = getattr(registry.get(name), "Spec", None)
            fields = []
            if spec is not None:
                for field_name in spec.model_fields:
                    if field_name != "type":
                        fields.append(f"{family}-{name}-{field_name}".lower())
            out.append((family, name, fields))
    return out


# -- component catalogue ----------------------------------------------------------------------------
def test_catalogue_lists_every_registered_component(catalogue):
    ids = _ids(catalogue)
    missing = []
    for family, name, fields in _expected_component_ids():
        if docgen_catalogue.component_id(family, name) not in ids:
            missing.append(f"{family}:{name}")
        missing += [f"{family}:{name} option {f}" for f in fields if f not in ids]
    assert not missing, f"not in the generated catalogue: {missing}"
    for family in REGISTRIES:
        assert f"{{#{docgen_common.anchor(family)}}}" in catalogue


def test_catalogue_names_provider_and_backends(catalogue):
    from hourglass.registry import ATTENTION

    section = catalogue.split("{#attention-neighborhood}")[1].split("\n### ")[0]
    assert "built in" in section
    facts = ATTENTION.describe("neighborhood")["facts"]
    assert "**Kernel:** `neighborhood`" in section
    for backend in facts["backends"]:
        assert f"`{backend}`" in section
    for registry in REGISTRIES.values():
        for name in registry.names():
            provider = registry.provider(name)
            if provider != "hourglass":  # plugin components name their distribution
                part = catalogue.split(f"{{#{docgen_catalogue.component_id(registry.family, name)}}}")[1]
                assert f"plugin `{provider}`" in part.split("\n### ")[0]


def test_catalogue_lists_every_preset(catalogue):
    from hourglass.models import list_models

    ids = _ids(catalogue)
    assert [p for p in list_models() if f"preset-{p}".lower() not in ids] == []


class _DocsProbeFFNSpec(Spec):
    type: Literal["docs_probe_ffn"] = "docs_probe_ffn"
    gain: float = Field(1.5, gt=0, description="a probe option that only this test registers")


class _DocsProbeFFN:
    """A component registered only by this test, to show the catalogue follows the registry."""

    Spec = _DocsProbeFFNSpec

    def __init__(self, spec: _DocsProbeFFNSpec, **context: object) -> None:
        self.spec = spec


def test_catalogue_follows_the_registry():
    FFN.add("docs_probe_ffn", _DocsProbeFFN)
    try:
        text = docgen_catalogue.catalogue_markdown()
    finally:
        FFN.unregister("docs_probe_ffn")
    section = text.split("{#ffn-docs_probe_ffn}")[1].split("\n### ")[0]
    assert "A component registered only by this test" in section
    assert '<a id="ffn-docs_probe_ffn-gain"></a>`gain` | `float` | `1.5` |' in section
    assert "a probe option that only this test registers (&gt; 0)" in section
    assert "{#ffn-docs_probe_ffn}" not in docgen_catalogue.catalogue_markdown()


# -- recipe reference -------------------------------------------------------------------------------
def _walk_spec(spec_cls: type[BaseModel], prefix: str, out: list[str]) -> None:
    for name, field in spec_cls.model_fields.items():
        if name == "type":
            continue
        out.append(f"{prefix}-{name}".lower())
        ann = field.annotation
        inner = typing.get_args(ann)[0] if typing.get_origin(ann) is list else ann
        if isinstance(inner, type) and issubclass(inner, BaseModel) and inner is not Spec:
            _walk_spec(inner, f"{prefix}-{name}", out)


def test_recipe_reference_lists_every_field_of_every_section(recipes_page):
    from hourglass.recipe import Recipe
    from hourglass.registry import MODEL, VAE

    expected = []
    for section, field in Recipe.model_fields.items():
        expected.append(section)
        ann = field.annotation
        optional = [a for a in typing.get_args(ann) if a is not type(None)]  # [eval]: EvalSection | None
        if len(optional) == 1 and isinstance(optional[0], type) and issubclass(optional[0], Spec):
            ann = optional[0]
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not Spec:
            _walk_spec(ann, section, expected)
        else:  # [model] and [vae]: a registry component; every type's fields
            registries = {"model": MODEL, "vae": VAE}
            assert section in registries, f"unexpected component section {section}"
            expected += [f"{section}-type"] + (["model-preset"] if section == "model" else [])
            for name in registries[section].names():
                _walk_spec(registries[section].spec_class(name), f"{section}-{name}", expected)
    ids = _ids(recipes_page)
    assert [e for e in expected if e not in ids] == []
    assert "`[[model.levels]]`" in recipes_page and "`[train.ema]`" in recipes_page


def test_recipe_reference_shows_types_defaults_and_descriptions(recipes_page):
    from hourglass.recipe import TrainSection

    row = next(line for line in recipes_page.splitlines() if 'id="train-lr"' in line)
    field = TrainSection.model_fields["lr"]
    assert "`float`" in row and f"`{field.default!r}`" in row and field.description in row
    assert "(&gt; 0)" in row  # the bound
    row = next(line for line in recipes_page.splitlines() if 'id="sample-sampler"' in line)
    assert "[sampler](components.md#sampler) component" in row and '"dpmpp_3m_sde"' in row


def test_section_ids_match_the_page(recipes_page):
    ids = _ids(recipes_page)
    for section, section_ids in docgen_recipes.section_ids().items():
        assert [i for i in section_ids if i not in ids] == [], section


# -- CLI reference ----------------------------------------------------------------------------------
def test_cli_reference_lists_every_subcommand_and_argument(cli_page):
    from hourglass.cli import build_parser

    parser = build_parser()
    commands = docgen_cli.subcommands(parser)
    assert len(commands) >= 10
    sections = re.split(r"\n##+ ", cli_page)
    pending = [([name], sub) for name, sub in commands.items()]
    while pending:  # every command, and every sub-command of one (``hourglass convert dit``)
        path, sub = pending.pop()
        name = " ".join(path)
        section = next((s for s in sections if s.startswith(f"`hourglass {name}` {{#")), None)
        assert section is not None, f"no section for `hourglass {name}`"
        assert sub.format_usage().strip() in section
        pending += [([*path, child], parser) for child, parser in docgen_cli.subcommands(sub).items()]
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert f'id="{docgen_cli.argument_id(path, action)}"' in section, (name, action.dest)
            for flag in action.option_strings:
                assert f"`{flag}`" in section, (name, flag)


def test_cli_reference_covers_a_parser_with_nested_commands():
    parser = argparse.ArgumentParser(prog="hourglass", description="top")
    sub = parser.add_subparsers(dest="command")
    outer = sub.add_parser("outer", help="the outer command", description="Runs ``x`` on <files>.")
    outer.add_argument("--level", type=int, default=3, choices=[1, 2, 3], help="how deep (%(default)s)")
    inner = outer.add_subparsers(dest="what").add_parser("inner", help="nested", epilog="examples:\n  hourglass outer inner")
    inner.add_argument("paths", nargs="+", help="files | folders")
    text = docgen_cli.cli_markdown(parser)
    assert "{#outer}" in text and "{#outer-inner}" in text
    assert "Runs `x` on &lt;files&gt;." in text
    assert "how deep (3)" in text and "choices: `1`, `2`, `3`" in text and "default: `3`" in text
    assert "files &#124; folders" in text and "one or more" in text
    assert "```bash\nhourglass outer inner\n```" in text


# -- committed generated pages, links, regions ------------------------------------------------------------
def markdown_pages() -> list[Path]:
    """``README.md`` and every Markdown page of ``docs/`` (the generators' folder aside)."""
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_gen" not in p.relative_to(DOCS).parts)]


def test_generated_docs_are_current():
    """The committed generated pages and regions are what ``python docs/_gen/docgen.py`` writes now."""
    result = subprocess.run([sys.executable, str(GEN / "docgen.py"), "--check", "--diff"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"generated docs are stale or cannot be generated; run `{docgen.COMMAND}` and commit the result\n"
        + result.stdout + result.stderr
    )


def test_generated_pages_are_committed_and_say_so():
    for rel, source in docgen.PAGES.items():
        path = ROOT / rel
        assert path.is_file(), f"{rel} is missing: run `{docgen.COMMAND}`"
        assert path.read_text(encoding="utf-8").startswith(docgen.page_header(source)), rel


def test_no_empty_placeholders_in_any_page():
    """Every generated region has its end marker and content; no marker of the old hook (which the files
    showed as nothing) is left."""
    problems = {}
    for page in markdown_pages():
        found = docgen.region_problems(page.read_text(encoding="utf-8"))
        if found:
            problems[str(page.relative_to(ROOT))] = found
    assert problems == {}
    assert sum(len(docgen.regions(p.read_text(encoding="utf-8"))) for p in markdown_pages()) >= 5


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r'<(?:a|img)\b[^>]*?\b(?:href|src)="([^"]+)"')
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ATTR_ID = re.compile(r"\s*\{[^}]*#([\w-]+)[^}]*\}\s*$")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` outside fenced code, with inline code spans blanked."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker.startswith(fence[0]) and len(marker) >= len(fence) and not line.strip()[len(marker):]:
                fence = None
            continue
        if fence is None:
            out.append((number, re.sub(r"(`+)(?:(?!\1).)+?\1", "``", line)))
    return out


def anchors_of(page: Path) -> set[str]:
    """The ids a link can point at on ``page``, as the site has them: headings (Python-Markdown's ``toc``
    slugs, or an explicit ``{#id}``) and ``id``/``name`` attributes of HTML."""
    from markdown.extensions.toc import slugify

    text = page.read_text(encoding="utf-8")
    ids: set[str] = set(re.findall(r'\b(?:id|name)="([^"]+)"', text))
    slugs: dict[str, int] = {}
    fence = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match:
            fence = None if fence and match.group(1).startswith(fence[0]) else (fence or match.group(1))
            continue
        heading = _HEADING.match(line) if fence is None else None
        if not heading:
            continue
        title = heading.group(2)
        explicit = _ATTR_ID.search(title)
        if explicit:
            ids.add(explicit.group(1))
            continue
        plain = re.sub(r"<[^>]+>", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)).replace("`", "").replace("*", "")
        slug = slugify(plain, "-")
        count = slugs.get(slug, 0)
        slugs[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}_{count}")
    return ids


def _documented_object(page: Path, fragment: str) -> bool:
    """Whether ``fragment`` is an API object that a ``::: module`` directive of ``page`` renders on the site
    (mkdocstrings gives each documented object the id of its dotted path); the object must exist."""
    import importlib

    for module in re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), flags=re.M):
        if fragment != module and not fragment.startswith(module + "."):
            continue
        obj = importlib.import_module(module)
        try:
            for part in fragment[len(module):].split(".")[1:]:
                obj = getattr(obj, part)
        except AttributeError:
            return False
        return True
    return False


def test_every_relative_link_and_anchor_resolves():
    """Each relative link of README.md and docs/ names a file of the repository (a page by its .md name) and,
    with ``#anchor``, a heading or id on that page: the links work in the files and on the site alike."""
    pytest.importorskip("markdown")
    broken, checked = [], 0
    anchors: dict[Path, set[str]] = {}
    for page in markdown_pages():
        for number, line in _prose_lines(page.read_text(encoding="utf-8")):
            for target in _LINK.findall(line) + _HTML_LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                    continue  # http(s):, mailto: ...
                checked += 1
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                path, _, fragment = target.partition("#")
                dest = (page.parent / path).resolve() if path else page
                if not dest.is_file():
                    broken.append(f"{where} (no such file)")
                    continue
                if ROOT not in dest.parents:
                    broken.append(f"{where} (outside the repository)")
                    continue
                if fragment:
                    if dest.suffix != ".md":
                        broken.append(f"{where} (an anchor in a file that is not a Markdown page)")
                        continue
                    if dest not in anchors:
                        anchors[dest] = anchors_of(dest)
                    if fragment not in anchors[dest] and not _documented_object(dest, fragment):
                        broken.append(f"{where} (no heading or id #{fragment} in {dest.relative_to(ROOT)})")
    assert broken == [], "broken links:\n" + "\n".join(broken)
    assert checked > 150  # the catalogue and recipe reference alone link hundreds of anchors


def test_link_checker_finds_broken_links(tmp_path):
    """The checker's own rules, on a page made to break them."""
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n## Two words `code`\n\n### Same\n\n### Same\n\n#### Named {#named}\n\n"
                    '<a id="cell"></a>\n\n```text\n# not a heading\n```\n')
    assert anchors_of(page) == {"a-page", "two-words-code", "same", "same_1", "named", "cell"}
    lines = dict(_prose_lines("a [x](y.md#z) `[no](link.md)`\n```\n[no](link.md)\n```\n![i](img.png)"))
    assert [_LINK.findall(line) for line in lines.values()] == [["y.md#z"], ["img.png"]]


def test_docgen_regions(tmp_path):
    tables = {"t": lambda: "| a |\n|---|\n| 1 |"}
    text = ("intro\n<!-- docgen:begin table: t -->\nold\n<!-- docgen:end -->\n"
            "<!-- docgen:begin command[2]: hourglass validate missing.toml -->\n<!-- docgen:end -->\n")
    filled = docgen.fill_regions(text, "x.md", tables)
    assert "<!-- docgen:begin table: t -->\n\n| a |\n|---|\n| 1 |\n\n<!-- docgen:end -->" in filled and "old" not in filled
    assert "```text\n$ hourglass validate missing.toml\n" in filled
    assert docgen.fill_regions(filled, "x.md", tables) == filled  # idempotent
    for bad, match in [("<!-- docgen:begin table: nope -->\n<!-- docgen:end -->", "unknown docgen table"),
                       ("<!-- docgen:begin table: t -->\n", "needs one"),
                       ("<!-- hourglass: list -->", "old marker"),
                       ("<!-- docgen:begin command: hourglass validate missing.toml -->\n<!-- docgen:end -->",
                        "exited with status 2, expected 0")]:
        with pytest.raises(docgen.DocgenError, match=match):
            docgen.fill_regions(bad, "x.md", tables)


def test_docgen_loads_exactly_the_example_plugins():
    found = {(ep.name, ep.dist.metadata["Name"], ep.value) for ep in docgen.example_plugins(ROOT)}
    assert found == {("dinat", "hourglass-dinat", "hourglass_dinat:register"),
                     ("extras", "hourglass-extras", "hourglass_extras:register")}


# -- benchmarks, nav, helpers -----------------------------------------------------------------------
def test_benchmarks_page_without_results(tmp_path):
    text = docgen_benchmarks.benchmarks_markdown(tmp_path / "docs", ROOT)
    assert text.startswith("# Benchmarks")
    assert "No results yet" in text
    if (ROOT / "benchmarks").is_dir() and any((ROOT / "benchmarks").glob("*.py")):
        assert "| `benchmarks/" in text


def test_benchmarks_page_inlines_every_result(tmp_path):
    folder = tmp_path / "docs" / "benchmarks"
    folder.mkdir(parents=True)
    (folder / "attention.md").write_text("# Attention kernels\n\n## CPU\n\n| a |\n|---|\n| 1 |\n\n![plot](attention.png)\n"
                                         "```text\n# not a heading\n```\n")
    (folder / "attention.png").write_bytes(b"\x89PNG")
    (folder / "scaling.png").write_bytes(b"\x89PNG")
    text = docgen_benchmarks.benchmarks_markdown(tmp_path / "docs", tmp_path)
    assert "## Attention kernels" in text and "### CPU" in text and "# not a heading" in text
    assert "[Attention kernels](attention.md)" in text
    assert "![scaling](scaling.png)" in text and "![attention]" not in text  # shown once, by its page
    assert "No results yet" not in text


def test_reliability_enters_the_nav_only_when_its_page_exists(tmp_path):
    pytest.importorskip("mkdocs")
    import docgen_hooks as hooks

    nav = [{"Home": "index.md"}, {"API reference": [{"Overview": "api/index.md"}]}]
    assert hooks.reliability_nav(nav, tmp_path) == nav
    (tmp_path / "reliability.md").write_text("# Reliability\n")
    assert hooks.reliability_nav(nav, tmp_path) == [nav[0], {"Reliability": "reliability.md"}, nav[1]]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (0.5, "0.5"),
        ((1, 2), "[1, 2]"),
        ("a\"b", '"a\\"b"'),
        ({"kernel_size": 7, "type": "neighborhood"}, '{type = "neighborhood", kernel_size = 7}'),
        (float("inf"), "inf"),
    ],
)
def test_toml_value(value, expected):
    assert docgen_common.toml_value(value) == expected


def test_md_text_escapes_html_and_globs_but_keeps_code():
    text = docgen_common.md_text("runs/<name>, ``runs/<name>``, :class:`RecipeError`, step_*.pt")
    assert text == "runs/&lt;name&gt;, `runs/<name>`, `RecipeError`, step_\\*.pt"
    assert docgen_common.md_cell("a | b\nc") == "a &#124; b c"


def test_griffe_extension_rewrites_sphinx_roles():
    import griffe_sphinx_roles

    text = griffe_sphinx_roles.rewrite("Raises :class:`~hourglass.recipe.RecipeError`; see :func:`load`::\n\n    x")
    assert text == "Raises `RecipeError`; see `load`:\n\n    x"


# -- hand-written pages ----------------------------------------------------------------------------
def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_concepts_examples_run():
    blocks = _python_blocks(DOCS / "concepts.md")
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/concepts.md", "exec"), namespace)  # noqa: S102 - our own docs


def test_contributing_page_matches_the_code():
    """The packages it says are auto-imported are ``hourglass._builtins.COMPONENT_PACKAGES``, and every file
    it names (other than a placeholder like ``<name>``) exists."""
    from hourglass._builtins import COMPONENT_PACKAGES

    text = (DOCS / "contributing.md").read_text(encoding="utf-8")
    paragraph = text.split("## Where a new built-in goes")[1].strip().split("\n\n")[0]
    named = re.findall(r"`(hourglass(?:/\w+)*)/`", paragraph)
    assert sorted(n.replace("/", ".") for n in named) == sorted(COMPONENT_PACKAGES)
    paths = set(re.findall(r"`((?:hourglass|tests|docs|plugins|benchmarks)/[\w/.-]+\.(?:py|md|toml))`", text))
    assert len(paths) >= 8 and [p for p in sorted(paths) if not (ROOT / p).is_file()] == []
    assert "def test_backend_table" in (ROOT / "tests" / "test_backends_resolve.py").read_text(encoding="utf-8")


def test_k_diffusion_page_names_registered_samplers_and_schedules():
    from hourglass.registry import SAMPLER, SCHEDULE

    text = (DOCS / "k-diffusion.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(sample_\w+|get_sigmas_\w+)[^|]*\| `(\w+)` \|(.*)$", text, flags=re.M)
    assert len(rows) >= 10
    for theirs, ours, notes in rows:
        registry = SAMPLER if theirs.startswith("sample_") else SCHEDULE
        if ours not in registry and "plugin" in notes:
            continue  # provided by an example plugin that is not installed here
        assert ours in registry, f"{theirs} -> {ours} is not a registered {registry.family}"


def test_architecture_figure_matches_its_preset():
    from docgen_architecture import level_rows

    svg = (DOCS / "assets" / "hdit_architecture.svg").read_text(encoding="utf-8")
    rows, _ = level_rows("hdit_ffhq1024")
    for row in rows:
        gh, gw = row["grid"]
        assert f"{gh}x{gw} tokens" in svg and f"width {row['width']}" in svg
    assert "hdit_ffhq1024" in svg


# -- the real build ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    result = subprocess.run(
        # not --quiet: it hides warnings from --strict (a docstring griffe cannot parse would pass)
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stdout + result.stderr
    assert (site / "index.html").is_file()
    pages = ["quickstart", "python-api", "concepts", "recipes", "components", "cli", "plugins", "contributing", "k-diffusion",
             "benchmarks", "api/registry", "api/recipe", "api/models", "api/nn", "api/diffusion", "api/data", "api/train",
             "api/backends", "api/interop", "api/hourglass", "export", "api/export", "evaluation", "api/evaluation"]
    for page in pages:
        assert (site / page / "index.html").is_file(), page
    assert (site / "reliability" / "index.html").is_file() == (DOCS / "reliability.md").is_file()
    components = (site / "components" / "index.html").read_text(encoding="utf-8")
    ids = _ids(components)
    assert [f"{f}:{n}" for f, n, _ in _expected_component_ids() if docgen_catalogue.component_id(f, n) not in ids] == []
    cli = _ids((site / "cli" / "index.html").read_text(encoding="utf-8"))
    from hourglass.cli import build_parser

    assert [c for c in docgen_cli.subcommands(build_parser()) if c not in cli] == []
    recipes = _ids((site / "recipes" / "index.html").read_text(encoding="utf-8"))
    assert [i for ids_ in docgen_recipes.section_ids().values() for i in ids_ if i not in recipes] == []
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "$ hourglass flops" in index and "<!-- hourglass:" not in index  # the committed output, no old markers
    assert (site / "assets" / "hdit_architecture.svg").is_file()
    api = (site / "api" / "registry" / "index.html").read_text(encoding="utf-8")
    assert 'id="hourglass.registry.Registry"' in api and ":class:`" not in api

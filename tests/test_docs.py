"""The README and docs/ match the code: every repository path they name exists, every
``videocls.`` name they give resolves, every README section other files point to exists, and
the README's module list is the package's modules, both ways."""

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "checkpoints" / "README.md"]
#: A path inside the repository, as the docs write it (a placeholder such as <run> is skipped).
REPO_PATH = re.compile(r"(?<![\w./-])((?:configs|docs|tools|videocls|tests|checkpoints|requirements|\.ci)"
                       r"/[\w./@<>*{}-]*)")
DOTTED = re.compile(r"(?<![\w./])videocls(?:\.\w+)+")
#: "README, "Section"", "README: "Section"", "README "Section"" in configs, code and docs.
SECTION_REF = re.compile(r"README[,:]?\s+\"([^\"]+)\"")
#: A markdown link to a relative target: [text](target).
LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def readme_block(after: str) -> str:
    """The first fenced block of README.md after the line ``after``."""
    text = (REPO / "README.md").read_text()
    rest = text[text.index(after):]
    start = rest.index("```\n") + 4
    return rest[start:rest.index("```", start)]


def resolve(dotted: str) -> object:
    """The object ``a.b.c.d`` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


#: Paths inside a run directory, not the repository.
RUN_RELATIVE = {"checkpoints/last.pt", "checkpoints/best.pt"}
#: A paragraph naming one of these is about an upstream repository's files (docs/RECIPES.md).
UPSTREAM = ("facebookresearch/",)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_and_link_in_the_docs_exists(doc):
    text = doc.read_text()
    ours = "\n\n".join(par for par in text.split("\n\n") if not any(u in par for u in UPSTREAM))
    named = {m.rstrip(".,:;") for m in REPO_PATH.findall(ours)} - RUN_RELATIVE
    named = {m for m in named if not re.search(r"[<>*{}]", m)}
    missing = sorted(m for m in named if not (REPO / m).exists())
    missing += sorted(t for t in LINK.findall(text) if not (doc.parent / t.split("#")[0]).exists())
    assert not missing, f"{doc.relative_to(REPO)} names paths that do not exist: {missing}"
    assert named or doc.name != "README.md"  # the pattern finds the README's paths at all


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_videocls_name_in_the_docs_resolves(doc):
    broken, names = [], sorted(set(DOTTED.findall(doc.read_text())))
    assert names or doc.name != "README.md"  # the pattern finds the README's names at all
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            broken.append(name)
    assert not broken, f"{doc.relative_to(REPO)} names what the package does not have: {broken}"


def test_readme_sections_referred_to_exist():
    headings = set(re.findall(r"^#+ (.+?)\s*$", (REPO / "README.md").read_text(), flags=re.M))
    referring = [p for pattern in ("configs/**/*.yaml", "videocls/**/*.py", "tools/*.py", "docs/*.md")
                 for p in REPO.glob(pattern)]
    refs = {(str(p.relative_to(REPO)), title) for p in referring
            for title in SECTION_REF.findall(p.read_text())}
    assert refs, "no README section reference found: the pattern is broken"
    missing = sorted(ref for ref in refs if ref[1] not in headings)
    assert not missing, f"README has no such section: {missing}"


def test_the_training_step_names_resolve():
    block = readme_block("One training step")
    names = set(re.findall(r"(?<![\w./])([a-z_]+(?:\.\w+)+)", block)) - {"trainer.py"}
    assert len(names) >= 8
    bases = ("", "videocls.", "videocls.data.", "videocls.engine.", "videocls.models.", "videocls.metrics.")
    unresolved = []
    for name in sorted(names):
        for base in bases:
            try:
                resolve(base + name)
                break
            except (ImportError, AttributeError):
                continue
        else:
            unresolved.append(name)
    assert not unresolved, f"README's training step names what does not exist: {unresolved}"


def test_the_readme_module_list_is_the_packages_modules():
    block = readme_block("Every module, by package")
    text: dict[str, str] = {}
    package = None
    for line in block.splitlines():
        head = re.match(r"^\s*([\w/]+/)\s{2,}(.*)$", line)
        if head:
            package, line = head.group(1), head.group(2)
        if package is not None:
            text[package] = f"{text.get(package, '')} {line}"
    listed = {package: {w.strip() for w in re.sub(r"\([^)]*\)", "", names).split(",") if w.strip()}
              for package, names in text.items()}  # without the (descriptions)
    folders = {f"{p.relative_to(REPO / 'videocls')}/" for p in (REPO / "videocls").rglob("__init__.py")
               for p in [p.parent] if p != REPO / "videocls"} | {"tools/"}
    assert set(listed) == folders, "README's module list and the packages differ"
    for folder in sorted(folders):
        path = REPO / folder if folder == "tools/" else REPO / "videocls" / folder
        modules = {p.stem for p in path.glob("*.py") if p.stem != "__init__"}
        extra, missing = sorted(listed[folder] - modules), sorted(modules - listed[folder])
        assert not extra and not missing, f"{folder}: README lists {extra} (not on disk), misses {missing}"

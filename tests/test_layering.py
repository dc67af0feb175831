"""The package's layers: higher layers import lower ones, never the reverse (checked on the
import statements of every module, so also imports inside functions)."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "posekernels"

# module (or package) -> the posekernels modules it must never import
FORBIDDEN = {
    "ops": ("models", "data", "inference", "checkpoints", "stream", "training", "export",
            "evaluation", "cli"),
    "skeletons": ("models", "data", "inference", "checkpoints", "stream", "training", "cli"),
    "models": ("data", "inference", "checkpoints", "stream", "training", "export", "evaluation",
               "cli"),
    "data": ("inference", "checkpoints", "stream", "training", "export", "evaluation", "cli"),
    "checkpoints": ("inference", "stream", "training", "export", "evaluation", "cli"),
    "inference": ("checkpoints", "stream", "training", "export", "evaluation", "cli"),
    "stream": ("training", "export", "evaluation", "cli"),
    "export": ("stream", "training", "evaluation", "cli"),
    "evaluation": ("stream", "training", "export", "cli"),
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _imported(path, parts):
    """The posekernels submodules (first component) imported anywhere in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = parts[:-1]  # the package a relative import starts from
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name.split(".")
                if name[0] == "posekernels" and len(name) > 1:
                    out.add(name[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                name = (node.module or "").split(".")
                if name[0] != "posekernels":
                    continue
                rest = name[1:]
            else:
                base = list(package[:len(package) - (node.level - 1)]) if node.level > 1 \
                    else list(package)
                rest = base + (node.module.split(".") if node.module else [])
            if rest:
                out.add(rest[0])
            else:  # from . import x (at the top level) / from .. import x
                out.update(alias.name for alias in node.names)
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_module_imports_a_higher_layer(layer):
    bad = []
    for path, parts in _modules():
        if parts[0] != layer:
            continue
        hits = _imported(path, parts) & set(FORBIDDEN[layer])
        if hits:
            bad.append(f"{'/'.join(parts)}.py imports {sorted(hits)}")
    assert not bad, bad


def test_no_library_module_imports_the_command_line():
    bad = [f"{'/'.join(parts)}.py" for path, parts in _modules()
           if parts[0] not in ("cli", "__main__") and "cli" in _imported(path, parts)]
    assert not bad, bad

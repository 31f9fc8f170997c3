"""services/domain imports nothing but the standard library and pydantic (design.md 2)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "services" / "domain"
ALLOWED_THIRD_PARTY = {"pydantic", "pydantic_core"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
        return True
    return module == "services.domain" or module.startswith("services.domain.")


def test_domain_package_exists() -> None:
    assert (DOMAIN / "models.py").is_file()
    assert len(list(DOMAIN.glob("*.py"))) > 3


@pytest.mark.parametrize("path", sorted(DOMAIN.rglob("*.py")), ids=lambda p: str(p.relative_to(DOMAIN)))
def test_domain_module_imports_only_stdlib_and_pydantic(path: Path) -> None:
    bad = [f"{path.name}:{line} imports {module}" for line, module in _imports(path) if not _allowed(module)]
    assert not bad, "services/domain must stay pure: " + "; ".join(bad)


def test_checker_catches_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import os\nfrom cryptography.fernet import Fernet\nimport fastavro\nfrom . import y\n")
    assert [m for _, m in _imports(sample) if not _allowed(m)] == ["cryptography.fernet", "fastavro"]

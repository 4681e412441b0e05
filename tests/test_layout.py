"""The package layout tells the data flow, and the imports respect it.

Scoring and monitoring meet only through ``stream.messages`` and ``stream.kafka``, as they meet
in Kafka; the engine never imports the demo's example domain or the tools; the README's layout
table names every module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stream"
# flow -> packages it must not import (at module level or inside functions)
FORBIDDEN = {
    "scoring": ("stream.monitoring", "stream.training", "stream.examples", "stream.tools"),
    "monitoring": ("stream.scoring", "stream.training", "stream.examples", "stream.tools"),
    "training": ("stream.examples", "stream.tools"),
    "reporting": ("stream.examples", "stream.tools"),
    # the bus vocabulary every flow shares imports none of them
    "messages": ("stream.scoring", "stream.monitoring", "stream.training", "stream.reporting",
                 "stream.examples", "stream.tools"),
}
# top-level engine modules: everything at the top except the command line, which wires tools in
ENGINE_TOP_FORBIDDEN = ("stream.examples", "stream.tools", "stream.scoring", "stream.monitoring",
                        "stream.training")
# process wiring and the public API reach into every flow
TOP_MAY_IMPORT_FLOWS = {"cli.py", "app.py", "stage_process.py", "__init__.py"}
# reasoned exceptions: the one settings object reads the monitor's settings dataclass (no
# scipy); the registry checks a version with the scorer's own loader before promoting it
ALLOWED = {
    "stream/config.py": ("stream.monitoring.drift_settings",),
    "stream/registry.py": ("stream.scoring.model",),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("flow", sorted(FORBIDDEN))
def test_flows_do_not_import_each_other(flow):
    bad = []
    for path in sorted((PACKAGE / flow).glob("*.py")):
        for name in imported_modules(path):
            if name.startswith(FORBIDDEN[flow]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_top_level_engine_modules_import_no_flow_tool_or_example():
    bad = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in TOP_MAY_IMPORT_FLOWS:
            continue
        allowed = ALLOWED.get(str(path.relative_to(ROOT)), ())
        for name in imported_modules(path):
            if name.startswith(ENGINE_TOP_FORBIDDEN) and not name.startswith(allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    missing = [str(p.relative_to(ROOT)) for p in modules()
               if p.name != "__init__.py" and f"`{p.relative_to(ROOT)}`" not in layout]
    assert missing == []


# A module over the bar fails (a reasoned exception would be named here).
OVERSIZE: set[str] = set()


def test_modules_stay_small():
    """About one thing each: none much over 400 lines."""
    big = {str(p.relative_to(ROOT)): n for p in modules()
           if (n := len(p.read_text().splitlines())) > 420}
    assert set(big) <= OVERSIZE, big

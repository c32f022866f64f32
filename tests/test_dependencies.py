"""A plain install (`pip install .`, no extras) has everything the code imports.

The test environment holds the test extra too, which can bring in what the package forgot to
declare (Playwright brought greenlet, which SQLAlchemy's asyncio needs). So the command line
and every module run here in a subprocess that can import only the standard library, the
package itself and the distributions the package's declared dependencies pull in. `.ci/run`
also installs the package into a fresh virtual environment and runs it there.
"""

import json
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

# Runs before anything else in the subprocess: refuses top-level modules that come from a
# distribution outside the allowed set, as a plain install would not have them.
IMPORT_GUARD = """
import importlib.abc, importlib.metadata, json, re, runpy, sys

def canonicalize_name(name):
    return re.sub(r"[-_.]+", "-", name).lower()

allowed = set(json.loads(sys.argv[1]))
providers = importlib.metadata.packages_distributions()

class OnlyDeclared(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {canonicalize_name(d) for d in providers.get(top, ())}
        if top != "fleetplane" and dists and not dists & allowed:
            raise ImportError(f"{name}: {sorted(dists)} is not a declared dependency")
        return None

sys.meta_path.insert(0, OnlyDeclared())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Imports every module of the package, then runs the command line with the given arguments.
EVERY_MODULE_THEN_CLI = """
import importlib, pkgutil, sys
import fleetplane

for module in pkgutil.walk_packages(fleetplane.__path__, "fleetplane."):
    if ".migrations." not in module.name:  # migration scripts run inside alembic
        importlib.import_module(module.name)

from fleetplane.cli import app
app(sys.argv[1:])
"""


def declared_distributions() -> set[str]:
    """The distributions `pip install .` brings: the declared dependencies (no extras), with
    the extras they name, and everything those require in turn (as installed here)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pending = [Requirement(line) for line in pyproject["project"]["dependencies"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        extras = ["", *sorted(requirement.extras)]
        for line in metadata.distribution(name).requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                pending.append(needed)
    return {name for name, _ in seen}


def run_with_declared_only(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    guard = tmp_path / "guard.py"
    guard.write_text(IMPORT_GUARD)
    script = tmp_path / "every_module_then_cli.py"
    script.write_text(EVERY_MODULE_THEN_CLI)
    allowed = json.dumps(sorted(declared_distributions()))
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "src"),
        "FLEETPLANE_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [sys.executable, str(guard), allowed, str(script), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_plain_install_runs_the_command_line(tmp_path: Path) -> None:
    shown = run_with_declared_only(tmp_path, "--help")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "serve" in shown.stdout

    initialised = run_with_declared_only(tmp_path, "init", "--json")
    assert initialised.returncode == 0, initialised.stderr[-3000:]
    assert json.loads(initialised.stdout.splitlines()[-1])["api_key"]

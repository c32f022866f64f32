"""The layer rules of the design, read from the source with `ast`, imports inside functions
included (a late import is still a dependency).

The layers, from the bottom:

- **foundation**: `core/`, `config.py`, `telemetry.py` (the decoded message types) and
  `module_catalog.py` (the names of the customer-facing modules). It imports nothing above it:
  no domain, no intake, nothing of the assembly.
- **domains**: every other folder of `fleetplane/` (customers, devices, sensors, ...). A domain
  imports the foundation, its own files, and another domain's public face only:
  `service` (its rules) and `schemas` (the request and response shapes it shares), plus the
  modules named in `SHARED_PURE_MODULES` (pure functions and value types, no tables, no I/O).
  Never another domain's `models` (its tables), `studio` or `module` (its routers),
  `processor` (its pipeline step) or any other private file, and never the intake or the
  assembly.
- **intake** (`ingest/`): listeners, protocol decoders and the pipeline. Like a domain, and it
  may also import a domain's `processor`, since the pipeline orders the domains' steps.
- **assembly**: `app.py`, `registry.py`, `runtime.py`, `cli.py`, `bootstrap.py`,
  `step_worker.py` (the steps process's entry), `web/`, `simulator/`, `migrations/`: they put
  the platform together and may import anything. One assembly file is reachable from below:
  `runtime.py`, the typed dependency through which endpoints reach the process's parts, may
  be imported by a domain's routers (`studio`, `module`) and nothing else of a domain.

Across all of them: no circle among the files.
"""

import ast
import graphlib
from pathlib import Path

from fleetplane import module_catalog
from fleetplane.registry import MODULES

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fleetplane"

FOUNDATION = {"core", "config", "telemetry", "module_catalog"}
INTAKE = {"ingest"}
ASSEMBLY = {
    "app",
    "registry",
    "runtime",
    "cli",
    "bootstrap",
    "step_worker",
    "web",
    "simulator",
    "migrations",
    "__init__",
}
# What every domain may import of another domain.
PUBLIC_FACE = {"service", "schemas"}
# The assembly file a domain's routers may import (`runtime: Runtime = RuntimeDep`), and those
# routers. Other domain files are handed the parts they need by the routers.
RUNTIME = "fleetplane.runtime"
ROUTER_FILES = {"studio", "module"}
# Pure modules another domain may use too: sensor types and the conversion of raw values,
# which the live state, the pipeline and the message history all apply.
SHARED_PURE_MODULES = {"fleetplane.sensors.calculation"}
# Interfaces of one domain that others build on: the pipeline step contract, which a domain's
# step implements, and messages as columns, which whatever works on many messages reads.
SHARED_INTERFACES = {"fleetplane.steps.contract", "fleetplane.messages.columns"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The platform modules `path` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module in known}


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def part(module: str) -> str:
    """The top-level folder or file of `fleetplane` a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> str:
    top = part(module)
    if top in FOUNDATION:
        return "foundation"
    if top in INTAKE:
        return "intake"
    if top in ASSEMBLY:
        return "assembly"
    return "domain"


def why_not(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported`, or None when it may."""
    importer_layer, imported_layer = layer(importer), layer(imported)
    if importer_layer == "assembly" or imported_layer == "foundation":
        return None
    if part(importer) == part(imported) or imported in SHARED_PURE_MODULES | SHARED_INTERFACES:
        return None
    if imported == RUNTIME and importer_layer == "domain":
        if importer.rsplit(".", 1)[-1] in ROUTER_FILES:
            return None
        return "the runtime is for a domain's routers (studio, module); hand the parts down"
    if importer_layer == "foundation":
        return f"the foundation imports nothing of the {imported_layer} layer"
    if imported_layer != "domain":
        return f"the {importer_layer} layer imports nothing of the {imported_layer} layer"
    file = imported.rsplit(".", 1)[-1]
    allowed = PUBLIC_FACE | ({"processor"} if importer_layer == "intake" else set())
    if file not in allowed:
        return f"another domain's `{file}`; use its {' or '.join(sorted(allowed))}"
    return None


def test_every_top_level_file_has_a_layer() -> None:
    """A new top-level file must be placed in a layer here (a new folder is a domain)."""
    unplaced = {
        part(name)
        for name, path in source_files().items()
        if path.parent == PACKAGE and layer(name) == "domain"
    }
    assert not unplaced, f"put these in a layer of tests/test_layers.py: {sorted(unplaced)}"


def test_imports_keep_to_the_layers() -> None:
    broken = [
        f"{importer} imports {imported}: {reason}"
        for importer, imported_modules in sorted(import_graph().items())
        for imported in sorted(imported_modules)
        if (reason := why_not(importer, imported)) is not None
    ]
    assert not broken, "\n".join(broken)


def test_no_circle_among_the_files() -> None:
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as error:
        circle = error.args[1]
        raise AssertionError("an import circle: " + " -> ".join(reversed(circle))) from None


def test_the_registry_serves_exactly_the_catalogued_modules() -> None:
    """Customers are validated against the catalog; the registry binds each name to a router."""
    assert [module.name for module in MODULES] == [
        info.name for info in module_catalog.MODULE_INFOS
    ]

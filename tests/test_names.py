"""One name per behaviour: no two public functions or classes share a name, no package name hides a module."""

import ast
import importlib
import inspect
import pkgutil
from collections import defaultdict
from pathlib import Path

import vqfr

PACKAGE = Path(vqfr.__file__).parent
# Every command module has the same two entry points, by design.
SAME_NAME_BY_DESIGN = {"register", "run"}


def test_public_functions_and_classes_have_distinct_names():
    where = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(PACKAGE)))
    repeated = {n: files for n, files in where.items() if len(files) > 1 and n not in SAME_NAME_BY_DESIGN}
    assert repeated == {}


def test_no_package_attribute_hides_a_module():
    subpackages = [m.name for m in pkgutil.iter_modules(vqfr.__path__) if m.ispkg]
    packages = [vqfr] + [importlib.import_module(f"vqfr.{name}") for name in subpackages]
    for package in packages:
        for sub in pkgutil.iter_modules(package.__path__):
            # ``import vqfr.metrics.evaluation as m`` reads the package attribute, which must be the module
            if sub.name in dir(package):
                assert inspect.ismodule(getattr(package, sub.name)), f"{package.__name__}.{sub.name}"

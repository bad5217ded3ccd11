"""The layering of docs/DESIGN.md: data_tools imports neither model nor export, and model and
export do not import each other (estimator_main.py composes them)."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "docs", "DESIGN.md")
FORBIDDEN = {"data_tools": {"model", "export"}, "model": {"export"}, "export": {"model"}}


def imported_packages(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_follow_the_layering(package):
    offending = []
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                bad = set(imported_packages(path)) & FORBIDDEN[package]
                offending += [f"{os.path.relpath(path, ROOT)} imports {b}" for b in bad]
    assert not offending


def test_npu_bridge_is_imported_only_by_the_estimator_factory():
    users = []
    for package in ("data_tools", "model", "export"):
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    with open(path, encoding="utf-8") as f:
                        if "npu_bridge" in f.read():
                            users.append(os.path.relpath(path, ROOT))
    assert users == [os.path.join("model", "estimator_factory.py")]


def test_the_design_page_states_this_layering():
    with open(DESIGN, encoding="utf-8") as f:
        design = f.read()
    assert "Arrows point down the table only" in design
    for package in FORBIDDEN:
        assert f"`{package}/`" in design


@pytest.mark.parametrize("module", ["cli", "fileio", "ascend", "synthetic", "synthetic_faces",
                                    "synthetic_dataset", "pairs"])
def test_light_modules_do_not_import_tensorflow(module):
    # cli must run before TensorFlow loads; the others serve tools that need no TensorFlow.
    path = os.path.join(ROOT, "data_tools", module + ".py")
    assert "tensorflow" not in set(imported_packages(path))

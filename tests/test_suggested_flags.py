"""Every flag an error message suggests exists in the program that prints it.

A user told "pass --allow_missing_pairs" by ``export.embed``, which had no such flag, is stuck.
This collects, for each program (a module of the project with a top-level ``define_flags``),
the messages it can print: the string literals of ``raise``, ``*Error(...)``/``__init__``,
``logging.error/warning``, ``sys.exit``, ``_require`` and ``print(..., file=...)`` in every
top-level function or class the program reaches through the project's imports (a name-based
call graph from the program module), and checks that each ``--flag`` they name is one of the
program's flags (or ``--noflag`` of a boolean). A flag named after another program
(``make_tfrecords.py --pairs``, ``python -m data_tools.alignment.align --landmarks``) is that
program's advice and is not checked here.
"""

import ast
import importlib
import os
import re

import pytest
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("data_tools", "export", "training", "model", "runtime")
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)")
# A flag named right after a program name (and possibly other flags of it) belongs to that one.
OTHER_PROGRAM = re.compile(r"(\w+\.py|-m [\w.]+|circle-[\w-]+|data_tools\.\w+|export\.\w+)"
                           r"\s*(\[[^\]]*\]\s*)?(--[\w=.<>:-]+[\s,/]+((or|and)\s+)?)*$")
# absl's own flags, which every program takes.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "verbosity", "v",
              "undefok"}
MESSAGE_CALLS = ("error", "warning", "fatal", "exit", "_require", "__init__", "UsageError")


def project_modules():
    found = {"estimator_main": os.path.join(ROOT, "estimator_main.py")}
    for package in PACKAGES:
        for directory, _, names in sorted(os.walk(os.path.join(ROOT, package))):
            dotted = os.path.relpath(directory, ROOT).replace(os.sep, ".")
            for name in sorted(names):
                if name.endswith(".py"):
                    found[f"{dotted}.{name[:-3]}"] = os.path.join(directory, name)
    return found


def imported_names(tree, modules):
    """``{local name: (module, None)}`` for imported modules, ``(module, attr)`` for names."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    names[alias.asname or alias.name.split(".")[-1]] = (alias.name, None)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in modules:
                    names[alias.asname or alias.name] = (full, None)
                elif node.module in modules:
                    names[alias.asname or alias.name] = (node.module, alias.name)
    return names


def message_nodes(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield node.exc
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in MESSAGE_CALLS or name.endswith(("Error", "Exception")):
                yield node
            elif name == "print" and any(k.arg == "file" for k in node.keywords):
                yield node


def _string(node):
    """The text of a string literal node: ``ast.Constant`` (3.8+), ``ast.Str`` (3.7)."""
    if type(node).__name__ == "Str":
        return node.s
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def suggested_flags(unit):
    """``{flag: line}`` of the flags the messages of ``unit`` (an AST) name."""
    found = {}
    for message in message_nodes(unit):
        for node in ast.walk(message):
            text = _string(node)
            if text is not None:
                for match in FLAG.finditer(text):
                    if not OTHER_PROGRAM.search(text[:match.start()]):
                        found.setdefault(match.group(1), message.lineno)
    return found


def call_graph(modules):
    """Units ``(module, top-level name)`` (``<module>`` for the rest of a file), their ASTs,
    and the units each one names."""
    units, edges = {}, {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        imports = imported_names(tree, modules)
        tops = {node.name: node for node in tree.body
                if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        tops["<module>"] = ast.Module(
            body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))],
            type_ignores=[])
        for name, node in tops.items():
            units[(module, name)] = node
            named = set()
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name):
                    if sub.id in tops:
                        named.add((module, sub.id))
                    if sub.id in imports and imports[sub.id][1]:
                        named.add(imports[sub.id])
                elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                    target = imports.get(sub.value.id)
                    if target and target[1] is None:
                        named.add((target[0], sub.attr))
            edges[(module, name)] = named
    return units, edges


def reachable(program, units, edges):
    todo = [unit for unit in units if unit[0] == program]
    seen = set(todo)
    while todo:
        for unit in edges.get(todo.pop(), ()):
            if unit in units and unit not in seen:
                seen.add(unit)
                todo.append(unit)
    return seen


def program_flags(program):
    flag_values = flags.FlagValues()
    importlib.import_module(program).define_flags(flag_values)
    return set(flag_values) | ABSL_FLAGS


MODULES = project_modules()
UNITS, EDGES = call_graph(MODULES)
PROGRAMS = sorted(module for module, name in UNITS if name == "define_flags")


def test_the_programs_are_found():
    assert {"estimator_main", "export.embed", "export.gallery", "export.convert",
            "data_tools.make_tfrecords", "data_tools.alignment.align",
            "data_tools.insightface.make_bin", "data_tools.synthetic.make_faces"} <= set(PROGRAMS)


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_flag_a_message_suggests_exists(program):
    defined = program_flags(program)
    unknown = []
    for unit in sorted(reachable(program, UNITS, EDGES)):
        for flag, line in suggested_flags(UNITS[unit]).items():
            if flag not in defined and not (flag.startswith("no") and flag[2:] in defined):
                unknown.append(f"{MODULES[unit[0]]}:{line} ({unit[1]}): --{flag}")
    assert not unknown, f"{program} would suggest flags it does not take:\n" + "\n".join(unknown)


def test_the_scan_sees_the_messages_of_library_code():
    """The case of issue 32: the pairs library's message, printed by export.embed, is seen."""
    assert ("data_tools.pairs", "MissingPairImagesError") in reachable("export.embed", UNITS,
                                                                        EDGES)
    sample = ast.parse('raise ValueError(f"x: pass --allow_missing_pairs to skip, or '
                       'make_tfrecords.py --pairs --crop_box, --image_size")')
    assert set(suggested_flags(sample)) == {"allow_missing_pairs"}


def test_embed_pairs_with_a_missing_image_suggests_a_flag_it_takes(tmp_path, capsys):
    import numpy as np  # noqa: PLC0415

    from tests.test_embed_cli import PROJECTION, run_cli  # noqa: PLC0415
    from tests.test_embed_transform import make_raw_pairs  # noqa: PLC0415
    from tests.tiny_model import build_saved_model  # noqa: PLC0415

    export_dir = str(tmp_path / "model")
    build_saved_model(export_dir, PROJECTION, pixels_signature=True)
    image_dir = str(tmp_path / "lfw")
    pairs_path, pairs = make_raw_pairs(image_dir, np.random.RandomState(3))
    os.remove(os.path.join(image_dir, "Person_F", "Person_F_0002.jpg"))
    args = ["--model", export_dir, "--pairs", pairs_path, "--image_dir", image_dir]
    status, _, err = run_cli(capsys, *args)
    assert status == 1
    assert "pass --allow_missing_pairs to leave those pairs out" in err
    status, out, err = run_cli(capsys, *(args + ["--allow_missing_pairs"]))
    assert status == 0, err
    left_out = sum(1 for p in pairs if "Person_F" in (p[0], p[2]) and
                   (("Person_F", 2) in ((p[0], p[1]), (p[2], p[3]))))
    assert f"left out {left_out} of {len(pairs)} pairs" in err
    assert f"pairs: {len(pairs) - left_out} " in out

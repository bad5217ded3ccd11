"""The layering of docs/DESIGN.md: data_tools imports neither model nor export, model and
export do not import each other, and none of them imports training (the composition layer that
estimator_main.py runs); one job per file: a library defines no flags."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "docs", "DESIGN.md")
# training/ composes the three layers below it (and may import them all); nothing below imports it.
FORBIDDEN = {"data_tools": {"model", "export", "training"}, "model": {"export", "training"},
             "export": {"model", "training"}}
# evaluation/ (the protocols) stands on data_tools, numpy and tf alone: model/ takes its pair
# specs through model_fn_builder's eval_spec_fn, export/ reads its reports and metrics, and
# training/ composes them; nothing below evaluation/ imports it.
FORBIDDEN["evaluation"] = {"model", "export", "training"}
FORBIDDEN["model"] |= {"evaluation"}
FORBIDDEN["data_tools"] |= {"evaluation"}
# runtime/ says where things run (the estimator factory, TF_CONFIG, the Ascend rank, the worker
# shard). It takes a model_fn and hands the input_fns their WorkerShard, so neither model/ nor
# data_tools/ imports it (nor export/, which serves models without an estimator); it imports
# only their settings (RUNTIME_MAY_USE) and never the composition layer.
FORBIDDEN["runtime"] = {"evaluation", "export", "training"}
for _below in ("data_tools", "model", "evaluation", "export"):
    FORBIDDEN[_below] = FORBIDDEN[_below] | {"runtime"}
RUNTIME_MAY_USE = {"model.config", "data_tools.input_config", "data_tools.checks"}


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


def imported_modules(path):
    """The dotted modules a file imports (``from pkg import module`` counts as pkg.module)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.module if "." in node.module else f"{node.module}.{alias.name}"


def test_runtime_uses_only_the_settings_of_the_layers_below():
    # Where things run knows no network and no pipeline: the model_fn and the input_fns are
    # handed to it or handed what it computes.
    found = []
    for path in _python_files("runtime"):
        for module in imported_modules(path):
            if module.split(".")[0] in ("model", "data_tools") and module not in RUNTIME_MAY_USE:
                found.append(f"{os.path.relpath(path, ROOT)} imports {module}")
    assert found == []


def test_data_tools_reads_no_launch_environment():
    # The worker shard is computed in runtime.cluster and passed to the input_fns (issue 28):
    # no launcher's variable is named in data_tools/, and the input pipeline reads no
    # environment at all (os.environ, os.getenv).
    found = []
    for path in _python_files("data_tools"):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        pipeline = os.path.basename(path) in ("input_fns.py", "input_config.py")
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("TF_CONFIG", "RANK_ID",
                                                                 "RANK_SIZE"):
                found.append(f"{os.path.relpath(path, ROOT)}: {node.value}")
            elif pipeline and isinstance(node, ast.Attribute) and node.attr in ("environ",
                                                                                "getenv"):
                found.append(f"{os.path.relpath(path, ROOT)}: os.{node.attr}")
    assert found == []


def test_npu_bridge_is_imported_only_by_the_estimator_factory():
    users = []
    for package in ("data_tools", "model", "evaluation", "export", "training", "runtime"):
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    with open(path, encoding="utf-8") as f:
                        if "npu_bridge" in f.read():
                            users.append(os.path.relpath(path, ROOT))
    assert users == [os.path.join("runtime", "estimator_factory.py")]


def test_the_design_page_states_this_layering():
    with open(DESIGN, encoding="utf-8") as f:
        design = f.read()
    assert "Arrows point down the table only" in design
    for package in [*FORBIDDEN, "training"]:
        assert f"`{package}/`" in design


@pytest.mark.parametrize("module", [
    "data_tools/fileio", "data_tools/pairs", "data_tools/pairs_generation",
    "data_tools/synthetic/make_faces", "data_tools/synthetic/faces", "data_tools/synthetic/dataset",
    "data_tools/synthetic/__main__", "data_tools/alignment/face_alignment",
    "data_tools/insightface/bin_format", "data_tools/insightface/recordio",
    "runtime/ascend", "runtime/cluster"])
def test_light_modules_do_not_import_tensorflow(module):
    # These serve tools that need no TensorFlow (and a launcher may read its cluster before
    # TensorFlow loads).
    path = os.path.join(ROOT, *(module + ".py").split("/"))
    assert "tensorflow" not in set(imported_packages(path))


# cli/ is the command lines' recipe and shared flag groups: it runs before TensorFlow loads, and
# reads the flags into data_tools' values (Transform, alignment options), nothing above that.
CLI_MAY_IMPORT = {"cli", "data_tools"}
PROJECT_PACKAGES = {"cli", "data_tools", "model", "export", "training", "evaluation", "runtime",
                    "estimator_main", "benchmarks"}


def test_cli_imports_only_data_tools_and_no_tensorflow():
    offending = []
    for path in _python_files("cli"):
        imported = set(imported_packages(path))
        bad = (imported & PROJECT_PACKAGES) - CLI_MAY_IMPORT
        bad |= imported & {"tensorflow"}
        offending += [f"{os.path.relpath(path, ROOT)} imports {b}" for b in sorted(bad)]
    assert offending == []


def test_only_command_lines_import_cli():
    # A library that imported cli would be a command line (flags) in disguise.
    commands = set(command_line_modules())
    users = [_module_name(path) for path in _python_files("data_tools", "model", "export",
                                                          "training", "runtime")
             if "cli" in set(imported_packages(path))]
    assert users and set(users) <= commands, sorted(set(users) - commands)


def test_estimator_main_talks_to_training_and_cli_only():
    # The command line over training/: the model, data and export layers are training/'s.
    imported = set(imported_packages(os.path.join(ROOT, "estimator_main.py")))
    assert imported & PROJECT_PACKAGES == {"cli", "training"}


# One job per file (docs/DESIGN.md): a module is a library or a command line, never both. A
# command-line module defines flags (absl) and sets TensorFlow's log level at import; other code
# uses it only through its command line. Whatever else other code needs is a library's, and
# a library defines no flags.
LIBRARY_PACKAGES = ("data_tools", "evaluation", "export")
# What a command line offers others: its recipe (cli/) and, for tests, the text it
# prints (format_*).
COMMAND_LINE_NAMES = {"define_flags", "main", "run"}
COMMAND_LINE_PREFIXES = ("format_",)
# Where the users of the modules are.
USER_PLACES = ("data_tools", "model", "evaluation", "export", "training", "runtime",
               "benchmarks", "scripts", "tests", "estimator_main.py")


def _python_files(*places):
    for place in places:
        path = os.path.join(ROOT, place)
        if os.path.isfile(path):
            yield path
        for directory, _, files in os.walk(path):
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.join(directory, name)


def _module_name(path):
    return os.path.splitext(os.path.relpath(path, ROOT))[0].replace(os.sep, ".")


def defines_flags(path):
    """True when the module imports absl's flags, calls ``DEFINE_*`` or ``cli.quiet_tensorflow``
    at import: the marks of a command line."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "absl" and any(
                alias.name == "flags" for alias in node.names):
            return True
        if isinstance(node, ast.Import) and any(alias.name.startswith("absl.flags")
                                                for alias in node.names):
            return True
        call = node.value if isinstance(node, ast.Expr) else None
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "quiet_tensorflow"):
            return True
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr.startswith("DEFINE_") for node in ast.walk(tree))


def used_names(path, modules):
    """``{module: {name, ...}}``: the names of ``modules`` (dotted) that the file at ``path``
    uses, as ``module.name`` through any import alias or as ``from module import name``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    aliases, used = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if dotted in modules:
                    aliases[alias.asname or alias.name] = dotted
                elif node.module in modules:
                    used.setdefault(node.module, set()).add(alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:  # import pkg.module as name; import module
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            if module:
                used.setdefault(module, set()).add(node.attr)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and isinstance(node.value.value, ast.Name)):
            dotted = f"{node.value.value.id}.{node.value.attr}"
            if dotted in modules:
                used.setdefault(dotted, set()).add(node.attr)
    return used


def command_line_modules():
    return {_module_name(path): path for path in _python_files(*LIBRARY_PACKAGES)
            if defines_flags(path)}


def library_uses_of_command_lines():
    """``{command-line module: sorted "user: name" strings}`` of the uses other code makes of a
    command-line module beyond its command line."""
    commands = command_line_modules()
    found = {}
    for path in _python_files(*USER_PLACES):
        user = _module_name(path)
        for module, names in used_names(path, commands).items():
            if module == user or user in commands:
                continue  # a command line may run another (their shared flags are cli/'s)
            for name in sorted(names):
                if name not in COMMAND_LINE_NAMES and not name.startswith(COMMAND_LINE_PREFIXES):
                    found.setdefault(module, []).append(f"{user}: {name}")
    return found


def test_command_line_modules_are_found():
    commands = command_line_modules()
    for name in ("data_tools.make_tfrecords", "export.embed", "export.convert", "export.gallery",
                 "export.ijb", "export.identification", "evaluation.compare_reports"):
        assert name in commands
    for name in ("data_tools.conversion", "export.embedder",
                 "export.pair_verification", "evaluation.protocol", "evaluation.ijb",
                 "export.compare_reports"):
        assert name not in commands


def test_library_modules_define_no_flags():
    # A module that other code uses as a library (anything but define_flags, main, run and what
    # it prints) must define no flags: the library goes in a module of its own, the command
    # line stays a thin module over it (export/embed.py over export/embedder.py).
    assert library_uses_of_command_lines() == {}


def test_the_composition_layer_defines_no_flags():
    # training/ is estimator_main.py's library: the flags stay in the command line.
    assert [path for path in _python_files("training") if defines_flags(path)] == []


def test_runtime_defines_no_flags():
    # runtime/ is handed validated settings (RuntimeConfig), never flag values.
    assert [path for path in _python_files("runtime") if defines_flags(path)] == []


def test_estimator_main_is_only_a_command_line():
    # Others use estimator_main.py for its flags and its main; what they need besides (params,
    # builders, evaluation, the run record, mode dispatch) is training/'s.
    entry = os.path.join(ROOT, "estimator_main.py")
    allowed = COMMAND_LINE_NAMES | {"FLAGS", "flag_values"}
    found = []
    for path in _python_files(*USER_PLACES):
        if path == entry:
            continue
        for name in sorted(used_names(path, {"estimator_main": entry}).get("estimator_main", ())):
            if name not in allowed:
                found.append(f"{_module_name(path)}: {name}")
    assert found == []

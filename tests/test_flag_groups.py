"""One flag per setting (issue 28): every program is a console script built on the ``cli``
recipe, and a flag that several programs share is defined once, in its group
(``cli/flag_groups.py``), never again in a program's own code.

    python tests/test_flag_groups.py     # prints the counts: DEFINE_* sites per flag name
"""

import ast
import collections
import importlib
import os
import re
import subprocess
import sys

import pytest
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python tests/test_flag_groups.py`
    sys.path.insert(0, ROOT)

# Flag names two programs use for settings of different types, kept for the commands the README
# documents; each is a flag of its own program, not a shared setting.
SAME_NAME_OTHER_SETTING = {
    # gallery: cosine similarity (float); embed: squared L2 distance (float); quality: the
    # enum of how the threshold is found.
    "threshold": {"export.gallery", "export.embed", "export.quality"},
    # gallery: the index file (path); serve: the search backend (enum).
    "index": {"export.gallery", "export.serve"},
    # align: the report it writes; gallery: the report.json it reads a threshold from.
    "report": {"data_tools.alignment.align", "export.gallery"},
}
GROUPS_MODULE = "cli.flag_groups"


def console_scripts():
    """``{script name: module}`` of setup.py's console_scripts (read as text: running setup.py
    would need setuptools' machinery)."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        text = f.read()
    block = text[text.index('"console_scripts"'):]
    block = block[:block.index("]")]
    return {name: module for name, module, _ in
            re.findall(r'"([\w-]+)=([\w.]+):(\w+)"', block)}


def program_modules():
    """The modules built on the recipe: ``define_flags``, ``main`` and ``run`` at top level."""
    found = []
    for place in ("data_tools", "export", "evaluation", "runtime", "estimator_main.py"):
        path = os.path.join(ROOT, place)
        paths = [path] if os.path.isfile(path) else [
            os.path.join(d, n) for d, _, names in os.walk(path) for n in names if n.endswith(".py")]
        for file_path in paths:
            with open(file_path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), file_path)
            defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
            if {"define_flags", "main", "run"} <= defined:
                name = os.path.splitext(os.path.relpath(file_path, ROOT))[0]
                found.append(name.replace(os.sep, "."))
    return sorted(found)


def defining_modules():
    """``{flag name: {module that defines it: [programs]}}`` over every console script, each
    defining its flags on a ``FlagValues`` of its own."""
    table = collections.defaultdict(lambda: collections.defaultdict(list))
    for module_name in sorted(set(console_scripts().values())):
        module = importlib.import_module(module_name)
        fv = flags.FlagValues()
        module.define_flags(fv)
        for name in fv:
            table[name][fv.find_module_defining_flag(name)].append(module_name)
    return table


def _string(node):
    """A string literal's value, else None (Python 3.7 parses literals as ``ast.Str``)."""
    value = getattr(node, "value", getattr(node, "s", None))
    return value if isinstance(value, str) else None


def define_sites(root=ROOT):
    """``{flag name: [file, ...]}``: the ``DEFINE_*`` calls (and estimator_main's partials of
    them, ``string_flag(...)``) with a literal name, in the code of the programs and groups."""
    sites = collections.defaultdict(list)
    for place in ("cli", "data_tools", "export", "evaluation", "runtime", "training",
                  "estimator_main.py"):
        path = os.path.join(root, place)
        paths = [path] if os.path.isfile(path) else [
            os.path.join(d, n) for d, _, names in os.walk(path) for n in names if n.endswith(".py")]
        for file_path in paths:
            with open(file_path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), file_path)
            for node in ast.walk(tree):
                name = _string(node.args[0]) if isinstance(node, ast.Call) and node.args else None
                if name is None:
                    continue
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called.startswith("DEFINE_") or re.fullmatch(
                        r"(bool|enum|float|integer|list|string)_flag", called):
                    sites[name].append(os.path.relpath(file_path, root))
    return sites


def test_every_program_is_a_console_script_with_run():
    scripts = console_scripts()
    assert sorted(set(scripts.values())) == program_modules()
    assert len(scripts) == len(set(scripts.values()))  # one script per program
    for module_name in scripts.values():
        module = importlib.import_module(module_name)
        for name in ("define_flags", "main", "run"):
            assert callable(getattr(module, name, None)), f"{module_name}.{name}"


def test_a_shared_flag_is_defined_once_in_its_group():
    offending = []
    for name, modules in sorted(defining_modules().items()):
        own = {module for module in modules if not module.startswith("cli")}
        if name in SAME_NAME_OTHER_SETTING:
            assert own == SAME_NAME_OTHER_SETTING[name], name
            continue
        if len(modules) > 1:
            offending.append(f"--{name}: {dict(modules)}")
    assert offending == []


def test_the_shared_settings_come_from_the_groups():
    table = defining_modules()
    for name, users in [("image_size", 8), ("model", 7), ("batch_size", 6), ("flip", 6),
                        ("seed", 4), ("crop_box", 4), ("align", 4), ("landmarks", 2),
                        ("output_dir", 6), ("pairs", 6), ("num_workers", 3)]:
        assert set(table[name]) == {GROUPS_MODULE}, name
        assert len(table[name][GROUPS_MODULE]) == users, (name, table[name][GROUPS_MODULE])


def test_each_flag_name_has_one_define_site():
    sites = define_sites()
    shared = {name: files for name, files in sites.items() if len(files) > 1}
    assert set(shared) == set(SAME_NAME_OTHER_SETTING)
    for name in ("image_size", "model", "batch_size", "flip", "seed", "align", "crop_box"):
        assert sites[name] == [os.path.join("cli", "flag_groups.py")], name


def test_a_group_defines_the_same_flag_for_every_program():
    # One definition: type, default rule and bounds of --image_size are the group's wherever
    # it is used (the aligned faces keep their own 112 default and bound of 8 as arguments).
    bounds = set()
    for module_name in ("data_tools.make_tfrecords", "data_tools.insightface.make_bin",
                        "export.embed", "export.convert", "estimator_main"):
        fv = flags.FlagValues()
        importlib.import_module(module_name).define_flags(fv)
        flag = fv["image_size"]
        bounds.add((type(flag.parser).__name__, flag.default, flag.parser.lower_bound))
    assert bounds == {("IntegerParser", None, 1)}


def test_estimator_main_runs_on_flags_of_its_own(tmp_path):
    # The recipe: flags on a FlagValues of the test's own, the groups' flags among the run's
    # settings (flags.txt, params), absl's own not.
    from absl import app  # noqa: PLC0415

    import cli  # noqa: PLC0415
    import estimator_main  # noqa: PLC0415

    fv = flags.FlagValues()
    estimator_main.define_flags(fv)
    fv(["estimator_main.py", "--seed=3", "--batch_size=8", "--image_size=96"])
    values = estimator_main.flag_values(fv)
    assert (values["seed"], values["batch_size"], values["image_size"]) == (3, 8, 96)
    assert {"far_target", "progress", "allow_transform_mismatch", "mode"} <= set(values)
    assert not {"verbosity", "test_tmpdir", "flagfile"} & set(values)
    with pytest.raises(app.UsageError, match="--mode=evaluate needs --eval_records"):
        cli.run_main(estimator_main.define_flags, estimator_main.main,
                     ["estimator_main.py", "--mode=evaluate", f"--model_dir={tmp_path}"])


@pytest.mark.parametrize("argv", [["--helpshort"], ["--mode=evaluate", "--model_dir=nowhere"]])
def test_circle_train_prints_no_tensorflow_banner(tmp_path, argv):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "estimator_main.py"), *argv],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    for banner in ("oneDNN", "cpu_feature_guard", "This TensorFlow binary"):
        assert banner not in proc.stderr, proc.stderr[-2000:]
    if argv[0] != "--helpshort":  # a bad setting: one line, exit 1
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [
            "estimator_main.py: --mode=evaluate needs --eval_records: the pair records of "
            "make_tfrecords.py --pairs", "see --help for the flags"]
    else:
        assert "--image_size" in proc.stdout  # absl exits 1 after --helpshort


if __name__ == "__main__":
    counts = define_sites()
    print(f"{sum(map(len, counts.values()))} DEFINE_* sites, {len(counts)} flag names, "
          f"{len(console_scripts())} console scripts")
    for flag_name, files in sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(files) > 1:
            print(f"{len(files)} --{flag_name}: {', '.join(files)}")

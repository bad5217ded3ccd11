"""scripts/gpu_check.sh where there is no GPU (this CI): it must exit cleanly, say why in one
line, and still write its JSON record."""

import json
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      "gpu_check.sh")


def _run(tmp_path, path, *args):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PATH=path, PYTHON=sys.executable, TORCH_PYTHON=sys.executable,
               TF_PYTHON=sys.executable)
    done = subprocess.run(["bash", SCRIPT, f"--out={out}", *args], env=env, timeout=240,
                          capture_output=True, text=True, check=False)
    return done, json.loads(out.read_text())


def test_without_a_gpu_it_says_so_and_writes_the_record(tmp_path):
    # A PATH with the tools bash needs but no nvidia-smi.
    done, record = _run(tmp_path, "/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert "no GPU" in done.stderr and "nvidia-smi" in done.stderr
    assert record["gpu"] is None and record["skipped"]["all"].startswith("no GPU")
    assert not any(key.endswith("images_per_s") for key in record)


def test_with_a_gpu_but_no_cuda_frameworks_it_names_each_missing_part(tmp_path):
    # A fake nvidia-smi listing a card; this interpreter has no torch and a CPU-only TF.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'Fake GPU 80GB'\n")
    smi.chmod(0o755)
    done, record = _run(tmp_path, f"{bin_dir}:/usr/bin:/bin", "--dry_run")
    assert done.returncode == 0, done.stderr
    assert record["gpu"] == "Fake GPU 80GB"
    assert "torch" in record["skipped"]["peer"]
    assert "TensorFlow" in record["skipped"]["tensorflow"]
    assert "nothing to measure" in done.stderr

"""The benchmark scripts' resumable runs (benchmarks/methods_fashion.py, benchmarks/_runs.py): a run
another process trains is never read, cleared or restarted."""
import importlib.util
import os
import subprocess
import sys
import time

import pytest

from ocspruner.rundir import RunDirBusy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name="methods_fashion"):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["methods_fashion", "_runs"])
def test_a_run_held_by_another_process_is_left_alone(tmp_path, script):
    run_dir = tmp_path / "runs" / "dense-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"epoch": 0}\n')       # the other process's first epoch
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ocspruner.rundir import RunDir; RunDir(sys.argv[1]).lock(); "
        "print('locked', flush=True); time.sleep(60)"), str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy):
            if script == "methods_fashion":
                _script().run_one("dense", 0, {"threads": 1, "progress": False, "data.name": "synthetic"},
                                  str(tmp_path))
            else:
                _script("_runs").run_or_reuse("dense-s0", str(run_dir), lambda: pytest.fail("must not be built"))
        assert (run_dir / "metrics.jsonl").read_text() == '{"epoch": 0}\n'
        assert not (run_dir / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()

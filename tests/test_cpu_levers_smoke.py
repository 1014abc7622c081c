"""Smoke test of bench/cpu_levers.py: a --quick A/B in subprocesses reports the baseline and each lever asked for.

No timing is checked (the numbers depend on the machine and its load); only that every process ran and reported.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import missing

pytestmark = pytest.mark.slow  # runs the CPU levers' benchmark quickly (6 s)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.real_data
def test_quick_ab_reports_every_lever():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import benchmark

        benchmark.find_data_root()
    except benchmark.DataError:
        missing("Fashion-MNIST is not available ($BNVIZ_DATA, ./data, Debian's dataset-fashion-mnist)")
    finally:
        sys.path.remove(str(REPO / "bench"))
    cmd = [sys.executable, str(REPO / "bench" / "cpu_levers.py"), "--quick", "--rounds", "1", "--threads", "1"]
    out = subprocess.run([*cmd, "malloc", "omp-spin"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = {line.split(":")[0].strip() for line in out.stdout.splitlines() if "images/s" in line}
    assert lines == {"default", "malloc", "omp-spin"}

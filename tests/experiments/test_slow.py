"""Long end-to-end runs: `make test-slow` (excluded from the default suite)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_default_omniglot_demo_shows_what_transduction_adds(tmp_path):
    """The README's demo, unchanged: SIB (K=3) beats K=0 on held-out 5-way 1-shot tasks by
    more than the two confidence intervals together."""
    workdir = tmp_path / "omniglot"
    proc = subprocess.run([sys.executable, "-m", "experiments.omniglot", f"--workdir={workdir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["settings"]) == {"5way_1shot", "5way_5shot", "20way_1shot",
                                        "20way_5shot"}
    entry = results["settings"]["5way_1shot"]["methods"]
    gain = entry["sib"]["accuracy"] - entry["k0"]["accuracy"]
    assert gain > entry["sib"]["ci95"] + entry["k0"]["ci95"], entry

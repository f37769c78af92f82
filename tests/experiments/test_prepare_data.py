"""`python -m experiments.prepare_data`: errors in one sentence."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prepare_data_cli_reports_errors_in_one_sentence(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.prepare_data", "mini_imagenet",
         f"--imagenet_dir={tmp_path / 'nowhere'}", f"--csv_dir={tmp_path}",
         f"--out={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "nowhere" in proc.stderr

"""What pip installs: the accelerator extras resolve to JAX's own, matplotlib only for the
plots, the license and citation files, and a light `import metaunlab`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("extra,needs", [("cuda12", "jax-cuda12-plugin"), ("tpu", "libtpu")])
def test_accelerator_extras_resolve_to_jaxs_own(tmp_path, extra, needs):
    """`pip install --dry-run` resolves the whole install without a GPU or TPU (and without
    downloading the wheels): the extra must bring JAX's plugin for that accelerator."""
    assert PYPROJECT["project"]["optional-dependencies"][extra] == [f"jax[{extra}]>=0.4.30"]
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), f"{ROOT}[{extra}]"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"metaunlab", "jax", "jaxlib", needs} <= names


def test_matplotlib_is_needed_only_by_the_reports():
    project = PYPROJECT["project"]
    assert not any(dep.startswith("matplotlib") for dep in project["dependencies"])
    assert any(dep.startswith("matplotlib") for dep in project["optional-dependencies"]["reports"])
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, metaunlab, metaunlab.train.pipeline,"
         " metaunlab.trained_model"
         "; print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_license_and_citation_files():
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "Apache-2.0"
    assert citation["version"] == PYPROJECT["project"]["version"]
    paper = citation["preferred-citation"]
    assert paper["title"] == "Empirical Bayes Transductive Meta-Learning with Synthetic Gradients"
    assert paper["year"] == 2020 and paper["authors"][0]["family-names"] == "Hu"

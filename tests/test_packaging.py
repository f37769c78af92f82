"""What pip installs: one top-level package (`metaunlab`, with the scripts as
`metaunlab.experiments`) and a console script per experiment, the accelerator extras resolving
to JAX's own, matplotlib only for the plots, the license and citation files, and a light
`import metaunlab`."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

from experiments import console

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("extra,needs", [("cuda12", "jax-cuda12-plugin"), ("tpu", "libtpu")])
def test_accelerator_extras_resolve_to_jaxs_own(tmp_path, extra, needs):
    """`pip install --dry-run` resolves the whole install without a GPU or TPU (and without
    downloading the wheels): the extra must bring JAX's plugin for that accelerator."""
    assert PYPROJECT["project"]["optional-dependencies"][extra] == [f"jax[{extra}]>=0.10.2"]
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


def test_every_package_is_listed_and_every_script_has_a_console_entry():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"metaunlab.experiments": "experiments"}
    folders = sorted(str(p.parent.relative_to(ROOT)) for pattern in ("metaunlab/**/__init__.py",
                     "experiments/**/__init__.py") for p in ROOT.glob(pattern))
    listed = sorted(name.replace("metaunlab.experiments", "experiments").replace(".", "/")
                    for name in setuptools["packages"])
    assert listed == folders
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {f"metaunlab-{name.replace('_', '-')}":
                       f"metaunlab.experiments.console:{name}" for name in console.SCRIPTS}
    runnable = {p.stem for p in (ROOT / "experiments").glob("*.py")
                if re.search(r'^if __name__ == "__main__":', p.read_text(), re.M)}
    assert set(console.SCRIPTS) == runnable


@pytest.mark.slow  # CI runs it: make test-e2e
def test_the_wheel_installs_metaunlab_alone_and_its_console_scripts_run(tmp_path):
    """The wheel, installed into a folder of its own (its dependencies are this
    environment's): `metaunlab-predict --help` runs there, from the installed files."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("metaunlab-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith("entry_points.txt"))
    assert {n.split("/")[0] for n in names if not n.startswith("metaunlab-")} == {"metaunlab"}
    assert "metaunlab/experiments/configs/omniglot.py" in names
    assert "metaunlab-omniglot = metaunlab.experiments.console:omniglot" in entry_points
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
         str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=str(target))
    help_text = subprocess.run([str(target / "bin" / "metaunlab-predict"), "--help"],
                               cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120)
    assert help_text.returncode == 1, help_text.stderr[-3000:]  # absl's --help exits 1
    assert "Label a folder of unlabeled images" in help_text.stdout
    assert "--support_dir" in help_text.stdout
    where = subprocess.run([sys.executable, "-c", "import metaunlab.experiments.predict as m;"
                            " print(m.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(target / "metaunlab" / "experiments" / "predict.py")

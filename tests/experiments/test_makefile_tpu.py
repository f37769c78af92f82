"""The Cloud TPU targets of the Makefile, through their DRY_RUN=1 mode (prints the commands)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TPU = ["TPU_NAME=sib-pod", "ZONE=europe-west4-a", "ACCELERATOR_TYPE=v3-32",
       "RUNTIME_VERSION=tpu-vm-base"]


def dry_run(*args) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-s", "--no-print-directory", *args, "DRY_RUN=1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


def test_create_and_delete_name_the_tpu_zone_type_and_runtime():
    assert dry_run("tpu-create", *TPU) == [
        "gcloud compute tpus tpu-vm create sib-pod --zone=europe-west4-a "
        "--accelerator-type=v3-32 --version=tpu-vm-base"]
    assert dry_run("tpu-delete", *TPU) == [
        "gcloud compute tpus tpu-vm delete sib-pod --zone=europe-west4-a --quiet"]


def test_defaults_are_a_v4_pod_slice():
    [create] = dry_run("tpu-create")
    assert create.startswith("gcloud compute tpus tpu-vm create metaunlab ")
    assert "--zone=us-central2-b --accelerator-type=v4-32 --version=tpu-ubuntu2204-base" in create


def test_setup_installs_this_commit_on_every_worker():
    archive, scp, ssh = dry_run("tpu-setup", *TPU)
    assert archive.startswith("git archive") and "HEAD" in archive
    assert scp.startswith("gcloud compute tpus tpu-vm scp metaunlab-src.tar.gz sib-pod: ")
    assert "--worker=all" in scp and "--worker=all" in ssh
    assert ssh.startswith("gcloud compute tpus tpu-vm ssh sib-pod --zone=europe-west4-a ")
    assert "pip install -q -e '.[tpu]'" in ssh


def test_train_runs_the_experiment_on_all_workers_with_the_distributed_flag():
    [ssh] = dry_run("tpu-train", *TPU, "EXP=cifar_fs",
                    "CONFIG=experiments/configs/cifar_fs.py:5shot",
                    "TPU_WORKDIR=/mnt/nfs/w")
    assert ssh.startswith("gcloud compute tpus tpu-vm ssh sib-pod --zone=europe-west4-a "
                          "--worker=all --command=")
    assert ("-m experiments.cifar_fs --distributed --workdir=/mnt/nfs/w "
            "--config=experiments/configs/cifar_fs.py:5shot "
            "--config.data.root=/mnt/shared/data/cifar_fs") in ssh
    [logs] = dry_run("tpu-logs", *TPU)
    assert "--worker=0" in logs and "train.log" in logs


def test_without_dry_run_the_commands_are_executed_not_printed():
    """The same recipe without DRY_RUN runs gcloud (here: make -n shows no echo prefix)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "--no-print-directory", "tpu-delete", *TPU], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == (
        "gcloud compute tpus tpu-vm delete sib-pod --zone=europe-west4-a --quiet")

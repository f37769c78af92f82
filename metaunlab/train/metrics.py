"""Metrics of a run: one JSON line per record in `metrics.jsonl` plus TensorBoard events."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from metaunlab.files import atomic_path, write_error
from metaunlab.train.parallel import is_primary


class MetricWriter:
    """Appends `{"phase", "step", "time", **scalars}` records; TensorBoard tags are
    `phase/name`. Accuracies are percentages, in training and validation records alike.

    TensorBoard events go through tensorboardX, which needs no TensorFlow install. In a
    multi-process run only process 0 writes (the others hold the same values).
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
        self.enabled = enabled and is_primary()
        self._path = os.path.join(os.fspath(workdir), "metrics.jsonl")
        self._tb = None
        # Only the writing process may create the event file: tensorboardX creates it at
        # once, and two processes' files would both land in the shared work dir.
        if self.enabled:
            from tensorboardX import SummaryWriter  # imported lazily: heavy, optional for readers

            try:
                os.makedirs(workdir, exist_ok=True)
                self._tb = SummaryWriter(os.path.join(os.fspath(workdir), "tensorboard"))
            except OSError as error:
                raise write_error(os.fspath(workdir), error) from None

    def write(self, phase: str, step: int, **scalars: Any) -> None:
        if not self.enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        record = {"phase": phase, "step": int(step), "time": time.time(), **values}
        try:
            with open(self._path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as error:
            raise write_error(self._path, error) from None
        for name, value in values.items():
            self._tb.add_scalar(f"{phase}/{name}", value, int(step))

    def forget_after(self, phase: str, step: int) -> None:
        """Drop the records of `phase` and `<phase>_val` logged after `step`: a run resumed at
        `step` logs those steps again, and each step is to appear once."""
        if not self.enabled or not os.path.exists(self._path):
            return
        with open(self._path) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if not _logged_after(json.loads(line), phase, step)]
        if len(kept) == len(lines):
            return
        with atomic_path(self._path) as partial, open(partial, "w") as f:
            f.writelines(kept)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _logged_after(record: dict, phase: str, step: int) -> bool:
    return record.get("phase") in (phase, f"{phase}_val") and record.get("step", 0) > step


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of `metrics.jsonl` in order (empty when the run wrote none)."""
    path = os.path.join(os.fspath(workdir), "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]

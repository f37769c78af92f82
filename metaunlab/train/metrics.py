"""Metrics of a run: one JSON line per record in `metrics.jsonl` plus TensorBoard events.

A process killed while appending a record leaves half a line at the end of the file. Readers
skip a line that is not a record, with a warning naming the file and the line; a writer
starting a run (or resuming a phase) rewrites the file without it, so that its first record
starts a line of its own. A damaged line elsewhere (an edited file, a half line a writer
appended to) is skipped the same way: the file is the run's log of scalars, and one lost
point of a curve is better than a run that cannot resume or be reported on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import logging

from metaunlab.errors import shown
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
            self._keep(lambda record: True)  # a torn last line goes before the first append

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
        if self.enabled:
            self._keep(lambda record: not _logged_after(record, phase, step))

    def _keep(self, wanted: Callable[[dict], bool]) -> None:
        """Rewrite the file with only its `wanted` records, when that drops a line (a record,
        or one that is not a record) or the last line lacks its newline."""
        if not os.path.exists(self._path):
            return
        lines = _lines_and_records(self._path)
        kept = [line for line, record in lines if record is not None and wanted(record)]
        if len(kept) == len(lines) and _ends_a_line(self._path):
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


def _ends_a_line(path: str) -> bool:
    """Whether the file `path` is empty or ends with a newline."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _lines_and_records(path: str) -> list[tuple[str, dict | None]]:
    """Each non-blank line of `path` (ending in a newline) with its record, or None (and a
    warning) for a line that is not one."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            # What every writer writes: a dict with the phase and the step.
            if not (isinstance(record, dict) and isinstance(record.get("phase"), str)
                    and isinstance(record.get("step"), int)):
                logging.warning("%s line %d is not a metrics record (a write cut short, or an "
                                "edit); skipping it", shown(path), number)
                record = None
            out.append((line if line.endswith("\n") else line + "\n", record))
    return out


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of `metrics.jsonl` in order (empty when the run wrote none); a line that
    is not a record is skipped with a warning (module docstring)."""
    path = os.path.join(os.fspath(workdir), "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [record for _, record in _lines_and_records(path) if record is not None]

"""Labelling unlabeled images with a trained work dir: folders in, a CSV of predictions out.

    model = metaunlab.TrainedModel.load("workdirs/omniglot")
    predictions = model.predict_folders("support/", "queries/")
    predictions.to_csv("predictions.csv")

The support folder holds one folder per class (the folder name is the label), with any
number of images each; the query folder holds the unlabeled images, flat. The query set is
transductive: SIB's synthetic-gradient network normalises with the statistics of the queries
it refines on. Meta-training shows it query sets of n_way * n_query images, so a larger set
is split into ceil(Q / (n_way * n_query)) chunks of nearly equal size, in a seeded random
order (so that no chunk is, say, the images of one class that happen to sort together); each
chunk is one episode with the whole support set. K = 0 (the initialization network alone,
which ignores the other queries) is predicted beside it.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from metaunlab.data.errors import DataError
from metaunlab.data.task_folders import query_images, support_images
from metaunlab.errors import ConfigError
from metaunlab.methods.sib_head import StepScales, sib_method
from metaunlab.outputs import output_file
from metaunlab.results import setting_name
from metaunlab.train.query_schedule import training_query_counts

if TYPE_CHECKING:
    from metaunlab.head import Head
    from metaunlab.trained_model import TrainedModel


@dataclasses.dataclass
class Predictions:
    """Per query image: SIB's label and probabilities over `classes`, and K = 0's.

    Attributes:
      paths: the Q query files.
      classes: the N class names (support folder names), in the order of the probability
        columns.
      probabilities: (Q, N) SIB's class probabilities.
      k0_probabilities: (Q, N) K = 0's class probabilities.
      head: which trained head predicted, in words (`TrainedModel.describe_head`).
    """

    paths: list[str]
    classes: list[str]
    probabilities: np.ndarray
    k0_probabilities: np.ndarray
    head: str = ""  # which trained head predicted, in words (`TrainedModel.describe_head`)

    def class_counts(self, k0: bool = False) -> dict[str, int]:
        """Queries predicted as each class.

        Args:
          k0: count K = 0's predictions instead of SIB's.

        Returns:
          {class name: number of queries predicted as it}, in the order of `classes`.
        """
        probs = self.k0_probabilities if k0 else self.probabilities
        counts = np.bincount(probs.argmax(axis=1), minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts, strict=True)}

    def forced_even_warning(self) -> str | None:
        """A warning when SIB's predicted class counts look forced to be even.

        Returns:
          One sentence when there are at least two queries per class on average, SIB's
          counts are all within one of each other and K = 0's are not (a head whose
          readout assumes a balanced query set does this to any set); else None.
        """
        sib = np.array(list(self.class_counts().values()))
        k0 = np.array(list(self.class_counts(k0=True).values()))
        if len(self.paths) < 2 * len(self.classes) or sib.max() - sib.min() > 1:
            return None
        if k0.max() - k0.min() <= 1:
            return None
        return (f"SIB predicts every class {sib.min()} to {sib.max()} times while K = 0 "
                f"predicts {k0.min()} to {k0.max()}: the counts look forced to be even. "
                "If this query set is not balanced between its classes, use a head "
                "meta-trained without metatrain.balanced_readout.")

    @property
    def labels(self) -> list[str]:
        """SIB's predicted class name of each query."""
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    @property
    def k0_labels(self) -> list[str]:
        """K = 0's predicted class name of each query."""
        return [self.classes[i] for i in self.k0_probabilities.argmax(axis=1)]

    def to_csv(self, path: str | os.PathLike, *, class_columns: bool = False) -> None:
        """Write the predictions as CSV, one row per query (written atomically, through a
        symlink, `metaunlab.outputs.output_file`).

        The columns are `path,label,probability,label_k0,probability_k0` (probability: of
        the label). Text cells are safe to open in a spreadsheet (`spreadsheet_cell`).

        Args:
          path: the CSV file.
          class_columns: add `p_<class>` columns, SIB's probability of each class.
        """
        header = ["path", "label", "probability", "label_k0", "probability_k0"]
        if class_columns:
            header += [f"p_{name}" for name in self.classes]
        classes = [spreadsheet_cell(name) for name in self.classes]
        with output_file(path) as partial, open(partial, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)  # every name starts with a letter
            for i, query in enumerate(self.paths):
                sib, k0 = self.probabilities[i], self.k0_probabilities[i]
                row = [spreadsheet_cell(query), classes[sib.argmax()], f"{sib.max():.6f}",
                       classes[k0.argmax()], f"{k0.max():.6f}"]
                if class_columns:
                    row += [f"{p:.6f}" for p in sib]
                writer.writerow(row)


# A cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV Injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs as a formula.

    Args:
      text: a class name, a file path or any other string a user controls.

    Returns:
      `text` behind a single quote when it starts with `=`, `+`, `-`, `@`, a tab or a
      carriage return (OWASP's advice: the quote makes the cell text), else `text`. The csv
      module then quotes any comma, quote or line break in it.
    """
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def transductive_chunks(num_queries: int, chunk_size: int, seed: int = 0) -> list[np.ndarray]:
    """The queries of each transductive chunk (module docstring).

    Args:
      num_queries: Q.
      chunk_size: the most queries one chunk may hold.
      seed: the seed of the permutation.

    Returns:
      Index arrays: one of all queries when they fit in `chunk_size`, else
      ceil(Q / chunk_size) nearly equal chunks of a seeded permutation.
    """
    if num_queries <= chunk_size:
        return [np.arange(num_queries)]
    order = np.random.default_rng(seed).permutation(num_queries)
    return np.array_split(order, math.ceil(num_queries / chunk_size))


def predict(model: TrainedModel, support_feats: np.ndarray, support_labels: np.ndarray,
            query_feats: np.ndarray, *, checkpoint: str = "last", seed: int = 0,
            step: str = "trained") -> tuple[np.ndarray, np.ndarray]:
    """SIB's and K = 0's class probabilities for the queries of one task.

    The head is the one meta-trained for N ways (`head_for`); queries beyond its
    training query-set size are refined in chunks
    (`metaunlab.prediction.transductive_chunks`).

    Args:
      model: the trained run (`metaunlab.trained_model.TrainedModel`).
      support_feats: (Ns, D) support features.
      support_labels: (Ns,) int labels in 0..N-1, every class present (any number per
        class).
      query_feats: (Q, D) query features.
      checkpoint: "last" or "best".
      seed: the seed of the chunks' random order.
      step: "trained" (the reference) or "tuned", the multiple of it chosen on
        validation for the chunk's queries per class (`step_scales`; "sib_tuned" in
        results.json).

    Returns:
      (SIB's probabilities (Q, N), K = 0's probabilities (Q, N)).

    Raises:
      ConfigError: no head for N ways, or `step="tuned"` for a head with no tuned step.
      DataError: a class of 0..N-1 has no support example.
    """
    head = ready_head(model, support_labels, checkpoint=checkpoint, step=step)
    return head.probabilities(support_feats, support_labels, query_feats, seed)


@dataclasses.dataclass
class ReadyHead:
    """The trained head that serves one support set, read from the work dir.

    Attributes:
      model: the trained run.
      n_way, n_shot: the support set's shape.
      params: the head's parameters (of the checkpoint asked for).
      head: its composition.
      scales: the step multiples tuned on validation (`step="tuned"`), else None.
    """

    model: TrainedModel
    n_way: int
    n_shot: int
    params: dict
    head: Head
    scales: StepScales | None

    def probabilities(self, support_feats: np.ndarray, support_labels: np.ndarray,
                      query_feats: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(SIB's probabilities (Q, N), K = 0's (Q, N)), as `predict` returns them."""
        mt = self.model.config.metatrain
        support = (jnp.asarray(support_feats)[None], jnp.asarray(support_labels)[None])

        def probabilities(steps, queries):
            method = sib_method(self.params, steps, mt.inner_lr,
                                step_scales=self.scales if steps else None, head=self.head)
            return np.asarray(method.predictor(self.n_way)(
                method.params, None, *support, jnp.asarray(queries)[None])[0])

        sib_probs = np.zeros((len(query_feats), self.n_way), np.float32)
        largest = max(training_query_counts(mt))  # the largest query set meta-training saw
        for rows in transductive_chunks(len(query_feats), self.n_way * largest, seed):
            sib_probs[rows] = probabilities(mt.sib_steps, query_feats[rows])
        return sib_probs, probabilities(0, query_feats)


def ready_head(model: TrainedModel, support_labels: np.ndarray, *, checkpoint: str = "last",
               step: str = "trained") -> ReadyHead:
    """The head for a support set with these labels, read before any image is embedded, so
    that a missing head, checkpoint or tuned step is reported before the work.

    Args:
      model: the trained run.
      support_labels: (Ns,) int labels in 0..N-1, every class present.
      checkpoint: "last" or "best".
      step: "trained" or "tuned", as in `predict`.

    Returns:
      A `ReadyHead`.

    Raises:
      ConfigError: no head for N ways, no such checkpoint, or `step="tuned"` for a head with
        no tuned step.
      DataError: a class of 0..N-1 has no support example.
    """
    if step not in ("trained", "tuned"):
        raise ConfigError(f"step={step!r}: use 'trained' or 'tuned'.")
    n_way, n_shot = support_shape(model, support_labels)
    params = model.sib_params(n_way, n_shot, checkpoint)
    head = model.head(n_way, n_shot)
    scales = None
    if step == "tuned":
        scales = model.step_scales(n_way, n_shot, checkpoint)
        if scales is None:
            raise ConfigError(
                f"--step=tuned: the {model.head_for(n_way, n_shot)} head of "
                f"{model.workdir} ({checkpoint} checkpoint) has no step size tuned on "
                "validation; rerun the run with --config.test.step_scales=0.25,0.5,1,2,4 "
                "(it tunes without retraining), or use --step=trained.")
    return ReadyHead(model, n_way, n_shot, params, head, scales)


def support_shape(model: TrainedModel, support_labels: np.ndarray) -> tuple[int, int]:
    """(n_way, typical n_shot) of a support set's labels, checked to have a trained head of
    `model`."""
    n_way = int(np.max(support_labels)) + 1
    counts = np.bincount(support_labels, minlength=n_way)
    if np.any(counts == 0):
        raise DataError(f"the support set has no example of class(es) "
                        f"{np.flatnonzero(counts == 0).tolist()}; every class needs one.")
    n_shot = max(1, round(float(np.median(counts))))
    if model.head_for(n_way, n_shot) is None:
        trained = ", ".join(model.trained_settings()) or "no setting"
        raise ConfigError(f"the support set has {n_way} classes, but {model.workdir} has SIB "
                          f"heads only for {trained}; use as many classes as a trained "
                          f"head, or meta-train {setting_name(n_way, n_shot)}, or one head "
                          "for any way count (--config.metatrain.phi=equivariant), in a new "
                          "work dir.")
    return n_way, n_shot


def predict_folders(model: TrainedModel, support_dir: str, query_dir: str, *,
                    checkpoint: str = "last", seed: int = 0,
                    step: str = "trained") -> Predictions:
    """`predict` on image folders, read and preprocessed exactly as the training images.

    Args:
      model: the trained run.
      support_dir: a folder of class folders (the folder name is the label).
      query_dir: a flat folder of query images.
      checkpoint: "last" or "best".
      seed: the seed of the chunks' random order.
      step: "trained" or "tuned", as in `predict`.

    Returns:
      `metaunlab.prediction.Predictions` for the query images, sorted by name.
    """
    classes, support_files, labels = support_images(support_dir)
    queries = query_images(query_dir)
    head = ready_head(model, labels, checkpoint=checkpoint, step=step)  # before any image
    feats = model.embed_files([str(p) for p in support_files + queries])
    sib_probs, k0_probs = head.probabilities(feats[:len(labels)], labels, feats[len(labels):],
                                             seed)
    return Predictions([str(p) for p in queries], classes, sib_probs, k0_probs,
                       head=describe_head(model, head.n_way, head.n_shot, checkpoint, step))


def describe_head(model: TrainedModel, n_way: int, n_shot: int, checkpoint: str = "last",
                  step: str = "trained") -> str:
    """Which head serves n_way-way n_shot-shot tasks and what it assumes.

    Args:
      model: the trained run.
      n_way: classes per episode.
      n_shot: support images per class.
      checkpoint: "last" or "best".
      step: "trained" or "tuned".

    Returns:
      One line of text.
    """
    return (f"SIB head {model.head_for(n_way, n_shot)} of {model.workdir} ({checkpoint} "
            f"checkpoint), K = {model.config.metatrain.sib_steps} at the {step} step size; "
            + model.head(n_way, n_shot).describe())

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
from pathlib import Path

import numpy as np

from metaunlab.data.errors import DataError
from metaunlab.data.folders import IMAGE_SUFFIXES
from metaunlab.files import atomic_path


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
        """Write the predictions as CSV, one row per query (written atomically).

        The columns are `path,label,probability,label_k0,probability_k0` (probability: of
        the label).

        Args:
          path: the CSV file.
          class_columns: add `p_<class>` columns, SIB's probability of each class.
        """
        header = ["path", "label", "probability", "label_k0", "probability_k0"]
        if class_columns:
            header += [f"p_{name}" for name in self.classes]
        with atomic_path(path) as partial, open(partial, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for i, query in enumerate(self.paths):
                sib, k0 = self.probabilities[i], self.k0_probabilities[i]
                row = [query, self.classes[sib.argmax()], f"{sib.max():.6f}",
                       self.classes[k0.argmax()], f"{k0.max():.6f}"]
                if class_columns:
                    row += [f"{p:.6f}" for p in sib]
                writer.writerow(row)


def _images_in(folder: Path, what: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for file in files:
        if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{file} is not a {'/'.join(IMAGE_SUFFIXES)} image; the {what} "
                            "may hold only images, so move or delete it.")
    if not files:
        raise DataError(f"{what} {folder} holds no images; add some.")
    return files


def support_images(support_dir: str | os.PathLike) -> tuple[list[str], list[Path], np.ndarray]:
    """The images of a folder of class folders.

    Args:
      support_dir: a folder with one folder of images per class (at least two).

    Returns:
      (class names, sorted; image files; labels (n,) int32, the class of each file).

    Raises:
      DataError: no such folder, fewer than two classes, a loose file, an empty class, or
        a file that is not an image.
    """
    root = Path(support_dir)
    if not root.is_dir():
        raise DataError(f"support folder {root} does not exist; give --support_dir a folder "
                        "with one folder of images per class.")
    class_dirs = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    loose = [p for p in class_dirs if not p.is_dir()]
    if loose:
        raise DataError(f"{loose[0]} is a file directly inside the support folder {root}; "
                        "put every image in the folder of its class.")
    if len(class_dirs) < 2:
        raise DataError(f"support folder {root} has {len(class_dirs)} class folder(s); a "
                        "few-shot task needs at least two classes, one folder each.")
    files, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        images = _images_in(class_dir, "class folder")
        files += images
        labels += [label] * len(images)
    return [d.name for d in class_dirs], files, np.asarray(labels, np.int32)


def query_images(query_dir: str | os.PathLike) -> list[Path]:
    """The image files of a flat folder.

    Args:
      query_dir: a folder of images (hidden files ignored).

    Returns:
      The image files, sorted by name.

    Raises:
      DataError: no such folder, no images, or an entry that is not an image file.
    """
    root = Path(query_dir)
    if not root.is_dir():
        raise DataError(f"query folder {root} does not exist; give --query_dir a folder of "
                        "unlabeled images.")
    return _images_in(root, "query folder")


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

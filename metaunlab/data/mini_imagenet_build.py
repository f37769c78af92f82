"""Build miniImageNet from an ImageNet (ILSVRC-2012) train folder and the Ravi & Larochelle
split CSVs, for users who have ImageNet but not a pre-made copy.

The CSVs (``train.csv``, ``val.csv``, ``test.csv``; header ``filename,label``) name each
image ``<wnid><8-digit index>.jpg``, e.g. ``n0153282900000005.jpg``: the 5th image of
class ``n01532829``, counting from 1, when that class's ImageNet files
``n01532829_<number>.JPEG`` are ordered by ``<number>`` as an integer. That is the
convention of the generator script everyone builds miniImageNet with (public code orders
by the number, not by the file name string, which would put ``_10026`` before ``_2``).

The result is written in the SIB reference folder layout,
``<out>/{train,val,test}/<wnid>/<csv filename>``, rather than as pickle caches: it is the
layout the SIB reference code reads (so its fixed validation episode files, which name
images by these file names, resolve), it can be inspected and streamed image by image, and
an interrupted build resumes where it stopped. Images are squashed to 84x84 with area
averaging ("box", the counterpart of the generator's ``cv2.INTER_AREA``) and saved as JPEG
(quality 95) under the CSV's ``.jpg`` name, so pixels differ slightly from other copies.
"""

from __future__ import annotations

import csv
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from metaunlab.data.decode import ImageFormat, decode_image, read_image_file
from metaunlab.data.errors import DataError, looks_like_html
from metaunlab.data.folders import REFERENCE_SPLITS
from metaunlab.files import atomic_path

_CSV_FILENAME = re.compile(r"^(n\d{8})(\d{8})\.jpg$")
_IMAGENET_FILE = re.compile(r"^(n\d{8})_(\d+)\.jpe?g$", re.IGNORECASE)
_THREADS = min(8, os.cpu_count() or 1)


def read_split_csv(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{wnid: [csv file names in file order]}`` of one Ravi & Larochelle split CSV."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror}); download the split CSVs into "
                        "--csv_dir.") from error
    if looks_like_html(text[:512]):
        raise DataError(f"{path} is an HTML page, not a CSV (a web page was saved in its "
                        "place); download the raw file again.")
    rows = list(csv.reader(text.decode("utf-8", errors="replace").splitlines()))
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise DataError(f"{path} does not start with the header 'filename,label'; it is not a "
                        "Ravi & Larochelle split CSV.")
    classes: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        match = _CSV_FILENAME.match(row[0].strip()) if len(row) == 2 else None
        if match is None or match[1] != row[1].strip():
            raise DataError(f"{path} line {line} is {','.join(row)!r}, not "
                            "'<wnid><8 digits>.jpg,<wnid>'; fix or re-download the file.")
        classes.setdefault(match[1], []).append(match[0])
    if not classes:
        raise DataError(f"{path} lists no images; download the split CSVs again.")
    return classes


def imagenet_class_files(class_dir: str | os.PathLike) -> list[Path]:
    """A class's ImageNet files ordered by their number (``n01532829_<number>.JPEG``)."""
    class_dir = Path(class_dir)
    if not class_dir.is_dir():
        raise DataError(f"ImageNet class folder {class_dir} does not exist; --imagenet_dir must "
                        "hold (a train/ folder of) <wnid>/<wnid>_<number>.JPEG class folders.")
    numbered = []
    for file in class_dir.iterdir():
        if file.name.startswith("."):
            continue
        match = _IMAGENET_FILE.match(file.name)
        if match is None or match[1] != class_dir.name:
            raise DataError(f"{file} is not named {class_dir.name}_<number>.JPEG like the "
                            "ImageNet train images; move it out of the class folder.")
        numbered.append((int(match[2]), file))
    return [file for _, file in sorted(numbered)]


def build_from_imagenet(
    imagenet_dir: str | os.PathLike,
    csv_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_size: int = 84,
    progress: bool = True,
) -> dict[str, int]:
    """Write ``<out>/{train,val,test}/<wnid>/<name>.jpg`` (see module doc); returns the
    number of images per split. Images already present in ``out`` are kept, so rerunning
    after an interruption finishes the job."""
    imagenet_dir, csv_dir, out = Path(imagenet_dir), Path(csv_dir), Path(out)
    train_dir = imagenet_dir / "train" if (imagenet_dir / "train").is_dir() else imagenet_dir
    if not train_dir.is_dir():
        raise DataError(f"--imagenet_dir {imagenet_dir} does not exist; point it at the "
                        "ImageNet folder holding train/<wnid>/*.JPEG.")
    splits = {split: read_split_csv(csv_dir / f"{split}.csv") for split in REFERENCE_SPLITS}
    owner: dict[str, str] = {}
    for split, classes in splits.items():
        for wnid in classes:
            if wnid in owner:
                raise DataError(f"class {wnid} is in both {owner[wnid]}.csv and {split}.csv; "
                                "the splits must be class-disjoint, so re-download the CSVs.")
            owner[wnid] = split

    jobs: list[tuple[Path, Path]] = []
    for split, classes in splits.items():
        for wnid, names in classes.items():
            files = imagenet_class_files(train_dir / wnid)
            for name in names:
                index = int(name[9:17])  # 1-based position in the numerically ordered files
                if not 1 <= index <= len(files):
                    raise DataError(f"{csv_dir / split}.csv names {name}, image {index} of "
                                    f"{wnid}, but {train_dir / wnid} has {len(files)} images; "
                                    "use the full ImageNet-2012 train set.")
                jobs.append((files[index - 1], out / split / wnid / name))

    fmt = ImageFormat(channels=3, image_size=image_size, resample="box")

    def write(job: tuple[Path, Path]) -> None:
        source, target = job
        if target.exists():
            return
        pixels = decode_image(read_image_file(source), str(source), fmt)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so an interrupted build never leaves a half-written image that
        # a rerun would keep.
        with atomic_path(target) as partial:
            Image.fromarray(pixels).save(partial, format="JPEG", quality=95)

    with ThreadPoolExecutor(_THREADS) as pool:
        for _ in tqdm(pool.map(write, jobs), total=len(jobs), desc="miniImageNet",
                      disable=None if progress else True):  # a bar only on a terminal
            pass
    return {split: sum(len(names) for names in classes.values())
            for split, classes in splits.items()}

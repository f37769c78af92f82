"""Fixtures shared by test files in several folders.

Factory fixtures return a function: the tests call it with the arguments the helper took.
Fixtures used by one folder only live in that folder's conftest.py. The tiny meta-training
run that tests start in subprocesses is a script, `tests/_tiny_run.py`, not a fixture.
"""

import contextlib
import dataclasses
import fcntl
import importlib.util
import io
import json
import logging as std_logging
import os
import pickle
import runpy
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import traceback
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl import logging as absl_logging
from PIL import Image

from metaunlab import sib
from metaunlab.backbones import Conv4
from metaunlab.data.cifar100 import cifar100_fine_label_names, cifar100_superclasses

ROOT = Path(__file__).resolve().parents[1]
SMALL1_ARCHIVE = ROOT.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"


# --- one compilation cache for the session ---------------------------------------------------

# Many tests compile the same programs (each meta-training run builds its own jitted step, and
# each process compiles again). JAX's persistent compilation cache, in a folder made for this
# session and removed after it, compiles each program once: the pytest-xdist workers and the
# subprocesses that tests start inherit the folder through these variables.
_CACHE_ENV = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}

# The suite's programs are small and each runs a few times, so XLA's compilation, not the
# run, is most of their cost. The backend's optimisation level 0 compiles about a fifth
# faster. Fast-math stays off at every level, so results agree with the default level to
# float rounding, and the tests' exact comparisons are between programs compiled alike.
FAST_COMPILE_XLA_FLAG = "--xla_backend_optimization_level=0"


def pytest_configure(config):
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controller, or a run without xdist
        folder = tempfile.mkdtemp(prefix="metaunlab-tests-jax-cache-")
        config._metaunlab_jax_cache = folder
        os.environ.update(_CACHE_ENV, JAX_COMPILATION_CACHE_DIR=folder)
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_backend_optimization_level" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE_XLA_FLAG}".strip()
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_unconfigure(config):
    folder = getattr(config, "_metaunlab_jax_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def torch():
    """PyTorch, for the parity tests; a test that asks for it is skipped without it."""
    return pytest.importorskip("torch")


# --- SIB parameters --------------------------------------------------------------------------


def _perturbed_sib_params(seed: int, n_way: int, dim: int) -> sib.Params:
    """SIB parameters away from their init values, so no term hides behind a 1 or a 0."""
    params = sib.init(jax.random.PRNGKey(seed), n_way, dim)
    rng = np.random.default_rng(seed)
    params["init"]["w"] = jnp.asarray(1.0 + 0.3 * rng.normal(size=dim), jnp.float32)
    params["classifier"] = {"scale": jnp.float32(7.0), "bias": jnp.float32(0.2)}
    for bn in ("bn1", "bn2"):
        width = params["grad_net"][bn]["scale"].shape[0]
        params["grad_net"][bn]["scale"] = jnp.asarray(1 + 0.2 * rng.normal(size=width),
                                                      jnp.float32)
        params["grad_net"][bn]["bias"] = jnp.asarray(0.1 * rng.normal(size=width), jnp.float32)
    return params


@pytest.fixture(scope="session")
def perturbed_sib_params():
    """`perturbed_sib_params(seed, n_way, dim)`: SIB parameters away from their init values
    (a new tree on every call)."""
    return _perturbed_sib_params


# --- a Conv-4 on random images ---------------------------------------------------------------

CONV4 = Conv4()


def _conv4_feature_fn(variables, x):
    return CONV4.apply(variables, x, train=False)


@pytest.fixture(scope="session")
def conv4_feature_fn():
    """`conv4_feature_fn(variables, images)`: Conv-4 features in inference mode."""
    return _conv4_feature_fn


@pytest.fixture(scope="module")
def conv4_toy():
    """(images, labels, variables): 60 random 28 px images of 6 classes and Conv-4 variables."""
    images = np.random.default_rng(0).integers(0, 255, (60, 28, 28, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10).astype(np.int32)
    variables = CONV4.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)
    return images, labels, variables


def _conv4_images(n=60, size=12):
    images = np.random.default_rng(0).integers(0, 255, (n, size, size, 1), dtype=np.uint8)
    return images, np.repeat(np.arange(6), n // 6).astype(np.int32)


@pytest.fixture(scope="session")
def conv4_images():
    """`conv4_images(n=60, size=12)`: (images, labels) of n random grey images of 6 classes."""
    return _conv4_images


# --- a command-line script run in this process -----------------------------------------------


@dataclasses.dataclass
class ScriptRun:
    """What `python -m <script>` left: its exit status and its output."""

    returncode: int
    stdout: str
    stderr: str


def _defined_by_a_script(fv: flags.FlagValues, name: str) -> bool:
    module = fv.find_module_defining_flag(name) or ""
    return module.startswith(("experiments.", str(ROOT / "experiments")))


@contextlib.contextmanager
def _flags_for_one_script():
    """absl's global FLAGS, for one script run as `__main__` in this process.

    A script defines its flags again each time it runs, so the flags of experiments modules
    (an earlier script run, or `experiments.import_torch` imported by a test) are set aside
    for the run; afterwards the run's experiments flags are removed, the ones set aside come
    back, and every flag has its value of before. Flags a library defines when first imported
    during the run stay, as after any import.
    """
    fv = flags.FLAGS
    parsed = fv.is_parsed()
    values = {name: (fv[name].value, fv[name].present, fv[name].using_default_value)
              for name in fv}
    set_aside = [(name, fv[name], fv.find_module_defining_flag(name),
                  fv.find_module_id_defining_flag(name)) for name in list(fv)
                 if _defined_by_a_script(fv, name)]
    key_flags = {module: list(fv.key_flags_by_module_dict().get(module, []))
                 for _, _, module, _ in set_aside}
    for name, *_ in set_aside:
        delattr(fv, name)
    try:
        yield
    finally:
        for name in [n for n in fv if _defined_by_a_script(fv, n)]:
            delattr(fv, name)
        for name, flag, module, module_id in set_aside:
            fv[name] = flag
            fv.register_flag_by_module(module, flag)
            fv.register_flag_by_module_id(module_id, flag)
        for module, declared in key_flags.items():
            for flag in declared:
                fv.register_key_flag_for_module(module, flag)
        fv.unparse_flags()
        for name, (value, present, using_default) in values.items():
            if name in fv:
                fv[name].value, fv[name].present = value, present
                fv[name].using_default_value = using_default
        if parsed:
            fv.mark_as_parsed()


def _run_script(module: str, *args) -> ScriptRun:
    """`python -m <module> ARGS` run in this process (JAX and the library are imported
    already, which a subprocess would do again), from the checkout's root.

    The exit status is the one the interpreter would give: that of `SystemExit`, 0 when the
    script returns, and 1 with the traceback on stderr for an exception it does not catch.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    saved_verbosity, saved_handlers = absl_logging.get_verbosity(), std_logging.root.handlers[:]
    returncode = 0
    try:
        with _flags_for_one_script(), contextlib.redirect_stdout(stdout), \
                contextlib.redirect_stderr(stderr):
            os.chdir(ROOT)
            # runpy sets argv[0] to the script's file, as `python -m` does.
            sys.argv = [importlib.util.find_spec(module).origin, *map(str, args)]
            try:
                with warnings.catch_warnings():  # a module a test imported: run it anew
                    warnings.filterwarnings("ignore", ".* found in sys.modules", RuntimeWarning)
                    runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as exit:
                if isinstance(exit.code, str):
                    print(exit.code, file=sys.stderr)
                returncode = exit.code if isinstance(exit.code, int) else int(
                    exit.code is not None)
            except Exception:  # as the interpreter ends: the traceback, exit status 1
                traceback.print_exc()
                returncode = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        absl_logging.set_verbosity(saved_verbosity)
        std_logging.root.handlers[:] = saved_handlers
    return ScriptRun(returncode, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def run_script():
    """`run_script(module, *args)`: `python -m <module> ARGS` run in this process; a
    `ScriptRun` (returncode, stdout, stderr)."""
    return _run_script


# --- what a folder holds ----------------------------------------------------------------------


def _tree_of(root: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) below `root`, by relative path; empty folders
    count, and a symlink counts as the file it points to."""
    tree = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        tree.update({str((here / name).relative_to(root)): None for name in dirs})
        tree.update({str((here / name).relative_to(root)): (here / name).read_bytes()
                     for name in files})
    return tree


@pytest.fixture(scope="session")
def tree_of():
    """`tree_of(root)`: {relative path: file bytes, or None for a folder} of everything below
    `root`, to show that a command left a folder as it was."""
    return _tree_of


# --- the tiny meta-training run in a subprocess (tests/_tiny_run.py) ------------------------


def _run_tiny(args, *, devices=1, timeout=300, **popen):
    """Start `python -m tests._tiny_run ARGS` with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                         f"--xla_force_host_platform_device_count={devices}".strip())
    command = [sys.executable, "-m", "tests._tiny_run", *map(str, args)]
    if popen:
        return subprocess.Popen(command, cwd=ROOT, env=env, **popen)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _saved_leaves(path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


@pytest.fixture(scope="session")
def run_tiny():
    """`run_tiny(args, devices=1, timeout=300, **popen)`: the tiny run on `devices` fake CPU
    devices; waits and checks the exit code, or returns the `Popen` when given Popen args."""
    return _run_tiny


@pytest.fixture(scope="session")
def saved_leaves():
    """`saved_leaves(path)`: the arrays a tiny run saved to an .npz, in tree order."""
    return _saved_leaves


# --- Omniglot --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def omniglot_small1() -> Path:
    """The shared Omniglot archive images_background_small1.zip (skips the test without it)."""
    if not SMALL1_ARCHIVE.exists():
        pytest.skip(f"{SMALL1_ARCHIVE} is absent; the shared Omniglot archives are needed")
    return SMALL1_ARCHIVE


def _first_characters_archive(archive: Path, out: Path, count: int) -> None:
    """A copy of an Omniglot archive holding only its first `count` characters, renamed to
    the `images_background` layout."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        characters = sorted({"/".join(n.split("/")[1:3]) for n in src.namelist()
                             if n.endswith(".png")})[:count]
        for name in src.namelist():
            if name.endswith(".png") and "/".join(name.split("/")[1:3]) in characters:
                dst.writestr(name.replace("images_background_small1", "images_background"),
                             src.read(name))


@pytest.fixture(scope="session")
def first_characters_archive():
    """`first_characters_archive(archive, out, count)`: a copy of an Omniglot archive holding
    only its first `count` characters, renamed to the `images_background` layout."""
    return _first_characters_archive


# --- Omniglot: a tiny config, and the demo run once per test session -----------------------


def _tiny_omniglot_config(data_root):
    """The demo's config cut to seconds on 40 real characters (20 / 10 / 10), for the tests
    of what the pipeline refuses before it trains."""
    from experiments.configs.omniglot import get_config

    config = get_config()
    config.data.root = str(data_root)
    config.data.fractions = (0.5, 0.25, 0.25)
    config.settings = "5way_1shot"
    config.val_episodes = 10
    config.test.episodes = 10
    config.test.step_scales = "0.25,1,4"
    config.pretrain.update(epochs=1, warmup_steps=5, decay_epochs=(), log_every=5)
    config.metatrain.update(iterations=10, sib_steps=1, batch_size=2, val_every=5,
                            log_every=5)
    return config


@pytest.fixture(scope="session")
def tiny_omniglot_config():
    """`tiny_omniglot_config(data_root)`: a tiny Omniglot config (a new one on every call)."""
    return _tiny_omniglot_config


def _shared_temp(tmp_path_factory) -> Path:
    """The temporary folder of this test session that all its pytest-xdist workers share."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder above every worker's own
    return shared


@contextlib.contextmanager
def _session_folder(tmp_path_factory, name: str):
    """A folder of this test session shared by its pytest-xdist workers, held under a lock:
    the first worker to ask fills it, the others wait for it and read it."""
    shared = _shared_temp(tmp_path_factory)
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared / name


@contextlib.contextmanager
def _filled_once(folder: Path):
    """Yields the folder to fill (`folder`.partial) when `folder` does not exist yet, else
    None; a filled folder takes its name at the end, so a failed filling leaves nothing."""
    if folder.exists():
        yield None
        return
    partial = _empty_partial(folder)
    yield partial
    partial.rename(folder)


def _empty_partial(folder: Path) -> Path:
    """`folder`.partial, emptied: where `folder` is filled before it takes its name."""
    partial = folder.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    return partial


@pytest.fixture(scope="session")
def few_characters(tmp_path_factory, omniglot_small1) -> Path:
    """A folder holding images_background.zip: the first 40 characters of a real Omniglot
    archive (same layout); made once for the session, do not write to it."""
    with _session_folder(tmp_path_factory, "few_characters") as data, \
            _filled_once(data) as partial:
        if partial:
            _first_characters_archive(omniglot_small1, partial / "images_background.zip", 40)
    return data


OMNIGLOT_ARCHIVES = SMALL1_ARCHIVE.parent
PER_ALPHABET = 5


@pytest.fixture(scope="session")
def five_per_alphabet(tmp_path_factory) -> Path:
    """Both minimal Omniglot archives cut to the first 5 characters of each of their 8
    alphabets (same layout); made once for the session, do not write to it."""
    sources = sorted(OMNIGLOT_ARCHIVES.glob("images_background_small*.zip"))
    if len(sources) != 2:
        pytest.skip(f"the two minimal Omniglot archives are needed in {OMNIGLOT_ARCHIVES}")
    with _session_folder(tmp_path_factory, "five_per_alphabet") as out, \
            _filled_once(out) as partial:
        for source in sources if partial else ():
            with zipfile.ZipFile(source) as src, \
                    zipfile.ZipFile(partial / source.name, "w") as dst:
                pngs = [n for n in src.namelist() if n.endswith(".png")]
                characters = {}
                for name in pngs:
                    alphabet, character = name.split("/")[1:3]
                    characters.setdefault(alphabet, set()).add(character)
                keep = {(a, c) for a, cs in characters.items()
                        for c in sorted(cs)[:PER_ALPHABET]}
                for name in pngs:
                    if tuple(name.split("/")[1:3]) in keep:
                        dst.writestr(name, src.read(name))
    return out


# The demo's command cut to seconds: one setting tested at 15 and 1 queries per class, one
# pretraining epoch on the training characters as drawn (only the few validation characters
# are rotated into more classes, so that 5-way validation episodes exist), ten
# meta-training iterations of SIB with K = 1 (cheaper to compile than the published K = 3),
# the step size tuned on validation as a user may ask.
DEMO_FLAGS = ("--config.settings=5way_1shot", "--config.val_episodes=10",
              "--config.data.rotate_splits=('val',)",
              "--config.pretrain.epochs=1", "--config.pretrain.warmup_steps=5",
              "--config.pretrain.decay_epochs=()", "--config.pretrain.log_every=5",
              "--config.metatrain.iterations=10", "--config.metatrain.batch_size=2",
              "--config.metatrain.val_every=5", "--config.metatrain.log_every=5",
              "--config.metatrain.sib_steps=1",
              "--config.metatrain.within_alphabet=True", "--config.test.episodes=20",
              "--config.test.extra_query_counts=1", "--config.test.step_scales=1,4")


@dataclasses.dataclass
class DemoRun:
    workdir: Path  # W: W/character, W/within_alphabet and their summary; do not write
    data: Path  # `five_per_alphabet`
    stdout: str  # what the command printed


def _demo_command(workdir: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "experiments.omniglot", f"--workdir={workdir}",
            f"--data_dir={data}", *DEMO_FLAGS]


@pytest.fixture(scope="session")
def omniglot_demo(tmp_path_factory, five_per_alphabet) -> DemoRun:
    """`python -m experiments.omniglot --workdir=W --data_dir=<five_per_alphabet>
    <DEMO_FLAGS>`, as a user runs the demo: both protocols side by side, each in a process
    of its own. Run once for the session, in the background from its start
    (`_demo_started_early`), or here by the first pytest-xdist worker to ask."""
    with _session_folder(tmp_path_factory, "omniglot_demo") as workdir, \
            _filled_once(workdir) as partial:
        if partial:
            proc = subprocess.run(_demo_command(partial, five_per_alphabet), cwd=ROOT,
                                  capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stderr[-3000:]
            (partial / "stdout.txt").write_text(proc.stdout)
    return DemoRun(workdir, five_per_alphabet, (workdir / "stdout.txt").read_text())


@pytest.fixture(scope="session", autouse=True)
def _demo_started_early(request, tmp_path_factory):
    """Starts `omniglot_demo`'s run in the background before this worker's first test, when a
    collected test needs it and no worker has started it: whichever worker then asks for it
    waits for what is left of it instead of the whole run, and no core idles meanwhile. A
    run that fails leaves no folder, so `omniglot_demo` runs it again and reports why."""
    if not any("omniglot_demo" in getattr(item, "fixturenames", ())
               for item in request.session.items):
        yield
        return
    data = request.getfixturevalue("five_per_alphabet")
    shared = _shared_temp(tmp_path_factory)
    lock = open(shared / "omniglot_demo.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another worker holds it: started, or filling it now
        lock.close()
        yield
        return
    workdir = shared / "omniglot_demo"
    if workdir.exists():
        lock.close()
        yield
        return
    partial = _empty_partial(workdir)
    proc = subprocess.Popen(_demo_command(partial, data), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)

    def finish():
        try:
            stdout, _ = proc.communicate(timeout=900)
            if proc.returncode == 0:
                (partial / "stdout.txt").write_text(stdout)
                partial.rename(workdir)
        finally:
            lock.close()  # releases the lock for the workers waiting in `omniglot_demo`

    waiter = threading.Thread(target=finish, daemon=True)
    waiter.start()
    yield
    if proc.poll() is None:  # the session ended first (-x, a deselected run)
        proc.kill()
    waiter.join()


@dataclasses.dataclass
class TinyRun:
    workdir: Path  # this module's own copy
    data: Path  # the images it was trained on (`five_per_alphabet`); do not write
    config: object  # the run's config


@pytest.fixture(scope="module")
def tiny_omniglot_run(omniglot_demo, tmp_path_factory) -> TinyRun:
    """The demo's character-split run (`omniglot_demo`), in a work dir of this module's own."""
    from metaunlab.train.workdir import load_config

    workdir = tmp_path_factory.mktemp("tiny_run") / "w"
    shutil.copytree(omniglot_demo.workdir / "character", workdir)
    return TinyRun(workdir, omniglot_demo.data, load_config(str(workdir)))


def _omniglot_pngs(data: Path) -> dict[str, bytes]:
    """Every PNG of the Omniglot archives in `data` by its path below the archive's top
    folder (alphabet/character/file.png), in dataset order: sorted classes, then file names."""
    pngs = {}
    for path in sorted(data.glob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".png"):
                    pngs[name.split("/", 1)[1]] = archive.read(name)
    return dict(sorted(pngs.items()))


@pytest.fixture(scope="session")
def omniglot_pngs():
    """`omniglot_pngs(data)`: {alphabet/character/file.png: PNG bytes} of the Omniglot
    archives in `data`, in dataset order."""
    return _omniglot_pngs


def _extract_test_images(data: Path, class_names, image_root: Path) -> list[str]:
    """Write the archives' images of `class_names` under `image_root` (alphabet/character/
    file); their paths relative to it, in dataset order."""
    paths = []
    for rel, png in _omniglot_pngs(data).items():
        if rel.rsplit("/", 1)[0] in class_names:
            (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
            (image_root / rel).write_bytes(png)
            paths.append(rel)
    return paths


@pytest.fixture(scope="session")
def extract_test_images():
    """`extract_test_images(data, class_names, image_root)`: the archives' images of those
    classes written under `image_root`; their relative paths in dataset order."""
    return _extract_test_images


# --- the SIB reference folder layout and the evaluate CLI -----------------------------------


def _write_reference_layout(root: Path, size: int, classes_per_split: int, per_class: int, *,
                            suffix: str = ".jpg", noise: float = 40.0, seed: int = 0) -> None:
    """`root/{train,val,test}/<class>/<i><suffix>`: one random colour per class plus noise,
    so classes are easy to tell apart and every image differs."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for c in range(classes_per_split):
            folder = root / split / f"n{split}{c:03d}"
            folder.mkdir(parents=True)
            colour = rng.integers(0, 255, 3)
            for i in range(per_class):
                pixels = np.clip(colour + rng.normal(0, noise, (size, size, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}{suffix}")


@pytest.fixture(scope="session")
def write_reference_layout():
    """`write_reference_layout(root, size, classes_per_split, per_class, *, suffix=".jpg",
    noise=40.0, seed=0)`: `root/{train,val,test}/<class>/<i><suffix>`, one random colour
    per class plus noise."""
    return _write_reference_layout


def _run_evaluate_cli(workdir: Path, records: list, image_root: Path, scratch: Path) -> dict:
    """`python -m experiments.evaluate` (in this process) on reference-JSON `records`; its
    --output as a dict."""
    episodes, out = scratch / "episodes.json", scratch / "evaluate_output.json"
    episodes.write_text(json.dumps(records))
    proc = _run_script("experiments.evaluate", f"--workdir={workdir}", f"--episodes={episodes}",
                       f"--image_root={image_root}", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def run_evaluate_cli():
    """`run_evaluate_cli(workdir, records, image_root, scratch)`: `python -m
    experiments.evaluate` on reference-JSON `records`; its --output as a dict."""
    return _run_evaluate_cli


# --- miniImageNet: pickle caches and the folder layout ---------------------------------------

MINI_IMAGENET_SPLITS = ("train", "val", "test")


def _class_images(rng, n: int, size: int) -> np.ndarray:
    """n noisy images around one random colour, so classes are easy to tell apart."""
    colour = rng.integers(0, 255, 3)
    return np.clip(colour + rng.normal(0, 30, (n, size, size, 3)), 0, 255).astype(np.uint8)


def _write_mini_imagenet_caches(root: Path, classes: int, per_class: int,
                                size: int = 84) -> dict:
    """mini-imagenet-cache-<split>.pkl files; returns {split: (images, {wnid: indices})}."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for s, split in enumerate(MINI_IMAGENET_SPLITS):
        blocks = [_class_images(rng, per_class, size) for _ in range(classes)]
        images = np.concatenate(blocks)
        # Names out of sorted order, as a dict built from a CSV can be.
        names = [f"n0{s}{classes - c:06d}" for c in range(classes)]
        class_dict = {name: list(range(c * per_class, (c + 1) * per_class))
                      for c, name in enumerate(names)}
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f, protocol=4)
        written[split] = (images, class_dict)
    return written


def _write_mini_imagenet_folders(root: Path, classes: int, per_class: int,
                                 size: int = 84) -> None:
    rng = np.random.default_rng(1)
    for s, split in enumerate(MINI_IMAGENET_SPLITS):
        for c in range(classes):
            folder = root / split / f"n0{s}{c:06d}"
            folder.mkdir(parents=True)
            for i, pixels in enumerate(_class_images(rng, per_class, size)):
                Image.fromarray(pixels).save(folder / f"n0{s}{c:06d}{i + 1:08d}.jpg")


@pytest.fixture(scope="session")
def write_mini_imagenet_caches():
    """`write_mini_imagenet_caches(root, classes, per_class, size=84)`: the
    mini-imagenet-cache-<split>.pkl files; returns {split: (images, {wnid: indices})}."""
    return _write_mini_imagenet_caches


@pytest.fixture(scope="session")
def write_mini_imagenet_folders():
    """`write_mini_imagenet_folders(root, classes, per_class, size=84)`: the
    <split>/<wnid>/<wnid><number>.jpg folder layout."""
    return _write_mini_imagenet_folders


# --- CIFAR-100 in the real on-disk formats ---------------------------------------------------


@dataclasses.dataclass
class FakeCifar100:
    archive: Path
    images: np.ndarray  # (N, 32, 32, 3): train rows then test rows, as a loader must return
    labels: np.ndarray  # fine labels
    coarse: np.ndarray
    train_count: int


def _py2_style_pickle(record: dict) -> bytes:
    # The release was written by Python 2 with protocol 2; numpy then lived in numpy.core, so
    # the pickle names numpy.core.multiarray._reconstruct. Reproduce that spelling.
    data = pickle.dumps(record, protocol=2)
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _make_cifar100_python(folder: Path, train_per_class: int = 2, test_per_class: int = 1,
                          seed: int = 0) -> FakeCifar100:
    """``cifar-100-python.tar.gz`` with ``train``/``test``/``meta`` pickles in the real
    structure, all 100 classes, a few random images per class (in shuffled row order)."""
    rng = np.random.default_rng(seed)
    fine_names = list(cifar100_fine_label_names())
    coarse_names = list(cifar100_superclasses())
    coarse_of = {f: i for i, fs in enumerate(cifar100_superclasses().values()) for f in fs}
    parts = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(100), per_class))
        rows = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        coarse = [coarse_of[fine_names[label]] for label in labels]
        parts[split] = {
            "filenames": [f"fake_{split}_{i}.png" for i in range(len(labels))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": [int(x) for x in labels],
            "coarse_labels": coarse,
            "data": rows,
        }
    meta = {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, record in (("train", parts["train"]), ("test", parts["test"]), ("meta", meta)):
            _add_tar_member(tar, f"cifar-100-python/{name}", _py2_style_pickle(record))
    rows = np.concatenate([parts["train"]["data"], parts["test"]["data"]])
    return FakeCifar100(
        archive=archive,
        images=rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1),
        labels=np.array(parts["train"]["fine_labels"] + parts["test"]["fine_labels"]),
        coarse=np.array(parts["train"]["coarse_labels"] + parts["test"]["coarse_labels"]),
        train_count=len(parts["train"]["fine_labels"]),
    )


def _add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="png")
    return buffer.getvalue()


def _prepare_fake_tfds_cifar100(fake: FakeCifar100, data_dir: Path) -> None:
    """A prepared TFDS ``cifar100`` (array_record) holding the fixture's images.

    It is TFDS's own Cifar100 builder (same name, version, features and split names) with only
    the download-and-parse step replaced, since the real one needs the binary release and
    TensorFlow's PNG encoder; the ids follow the real builder ("train_00000", ...).
    """
    from tensorflow_datasets.image_classification.cifar import Cifar100

    class FakeSourceCifar100(Cifar100, skip_registration=True):
        name = "cifar100"

        def _split_generators(self, dl_manager):
            self.info.features["label"].names = list(cifar100_fine_label_names())
            self.info.features["coarse_label"].names = list(cifar100_superclasses())
            return {
                "train": self._generate_examples("train_", range(fake.train_count)),
                "test": self._generate_examples("test_", range(fake.train_count,
                                                               len(fake.labels))),
            }

        def _generate_examples(self, prefix, rows):
            for index, row in enumerate(rows):
                yield index, {
                    "id": f"{prefix}{index:05d}",
                    "image": _png_bytes(fake.images[row]),
                    "label": int(fake.labels[row]),
                    "coarse_label": int(fake.coarse[row]),
                }

    FakeSourceCifar100(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


@pytest.fixture(scope="session")
def make_cifar100_python():
    """`make_cifar100_python(folder, train_per_class=2, test_per_class=1, seed=0)`: a
    ``cifar-100-python.tar.gz`` in the real structure; returns a `FakeCifar100` (the archive
    and the images and labels a loader must return)."""
    return _make_cifar100_python


@pytest.fixture(scope="session")
def prepare_fake_tfds_cifar100():
    """`prepare_fake_tfds_cifar100(fake, data_dir)`: a prepared TFDS ``cifar100``
    (array_record) holding the images of a `FakeCifar100`."""
    return _prepare_fake_tfds_cifar100


@pytest.fixture(scope="session")
def add_tar_member():
    """`add_tar_member(tar, name, data)`: add a file of bytes `data` to an open tar archive."""
    return _add_tar_member

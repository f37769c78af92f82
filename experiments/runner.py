"""What every `python -m experiments.<name>` shares: its flags, the config, the pipeline call.

The flags are defined here and registered as key flags of the experiment's own module, so its
`--help` lists them; `--print_config` prints every config field, resolved, and exits.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from metaunlab.errors import ConfigError
from metaunlab.train.config_checks import unknown_field_message

from . import cli

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# Exit status after a clean stop on SIGTERM: that of a process killed by SIGTERM, so a
# scheduler sees the run as unfinished (and requeues it, where it is set up to).
PREEMPTED_EXIT_STATUS = 128 + 15


def _with_missing_fields(stored, defaults):
    """`stored` plus the fields metaunlab gained since it was written, at their defaults."""
    for key, value in defaults.items():
        if key not in stored:
            stored[key] = value
        elif hasattr(value, "items") and hasattr(stored[key], "items"):
            _with_missing_fields(stored[key], value)
    return stored


def _stored_config_with_overrides(workdir: str, experiment_config):
    """The config a work dir was trained with, plus the `--config.<field>=` flags given now.

    Rerunning an experiment on an existing work dir without `--config` continues that run
    (a run imported by `experiments.import_torch`, or one started with a config variant),
    so the user need not repeat its overrides; fields that may not change are still refused
    by `save_config`.
    """
    from metaunlab.train.workdir import load_config

    config = _with_missing_fields(load_config(workdir), experiment_config)
    if config.data.name != experiment_config.data.name:
        raise ConfigError(f"--workdir={workdir} holds a {config.data.name} run; continue it "
                         f"with experiments.{config.data.name}, or use a new --workdir.")
    return _with_overrides(config)


def _with_overrides(config):
    """`config` with the `--config.<field>=` flags given on the command line."""
    for name in flags.FLAGS:
        if name.startswith("config.") and flags.FLAGS[name].present:
            *parents, leaf = name.split(".")[1:]
            node = config
            for part in parents:
                node = node[part]
            node[leaf] = flags.FLAGS[name].value
    return config


def main(config_name: str, *, data_dir_flag: bool = False,
         protocols: tuple[str, ...] = ()) -> None:
    """Define `--config` (a Python config file, `file.py:variant` allowed, with
    `--config.<field>=` overrides; default `experiments/configs/<config_name>.py`) and
    `--workdir`, then run the whole pipeline. On a work dir that already has a config.json,
    leaving out `--config` continues with the stored config.

    With `protocols` (variants of the config file), leaving out `--config` runs each of
    `--protocols` in its own work dir `<workdir>/<protocol>` (the overrides apply to all),
    then writes `<workdir>/results.md` and `results.json` with every protocol's results.
    """
    default_config = os.path.join(CONFIG_DIR, f"{config_name}.py")
    try:  # config_flags applies the --config.<field> overrides of sys.argv right here
        defined = [config_flags.DEFINE_config_file(
            "config", default_config, "Experiment config file, `file.py` or `file.py:variant` "
            f"(default experiments/configs/{config_name}.py); override any field with "
            "--config.<field>=<value>, and see every field with --print_config.",
            lock_config=True)]
    except (AttributeError, KeyError):
        _fail_on_unknown_override(sys.argv, default_config)
        raise
    defined.append(flags.DEFINE_string(
        "workdir", None, "Directory for checkpoints, metrics and results; rerun with the same "
        "one to resume (required unless --print_config)."))
    defined.append(flags.DEFINE_bool(
        "print_config", False, "Print the resolved config (the file, the config stored in "
        "--workdir, the overrides) and exit."))
    if data_dir_flag:
        defined.append(flags.DEFINE_string("data_dir", None, "Data folder; shortcut for "
                                           "--config.data.root."))
    if protocols:
        defined.append(flags.DEFINE_list(
            "protocols", list(protocols), "Without --config: the evaluation protocols to run, "
            f"each in <workdir>/<protocol> (of {', '.join(protocols)})."))
    if protocols:
        defined.append(define_parallel_runs_flag())
    defined.append(flags.DEFINE_bool(
        "distributed", os.environ.get("METAUNLAB_DISTRIBUTED", "") == "1",
        "Call jax.distributed.initialize() first (one process per host); default from "
        "METAUNLAB_DISTRIBUTED=1."))
    defined.append(flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0, with --distributed where JAX "
        "cannot detect it (not TPU, SLURM, Open MPI)."))
    defined.append(flags.DEFINE_integer("num_processes", None, "Number of processes, with "
                                        "--coordinator_address."))
    defined.append(flags.DEFINE_integer("process_id", None, "This process's index, with "
                                        "--coordinator_address."))
    # absl's --help lists the key flags of the main module (sys.argv[0]); these are defined
    # here, so they are registered as the experiment's own.
    for holder in defined:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])

    def run(argv):
        del argv
        cli.set_default_verbosity()
        FLAGS = flags.FLAGS
        with cli.user_errors():
            if protocols and not FLAGS["config"].present:
                return run_protocols(FLAGS, default_config, protocols, data_dir_flag)
            config = config_flag_value(FLAGS, data_dir_flag)
            if FLAGS.print_config:
                print(config)
                return
            if not FLAGS.workdir:
                raise ConfigError("--workdir is not set; name a directory for the run's "
                                  "checkpoints and results.")
            manual = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
            if any(v is not None for v in manual) and not (
                    FLAGS.distributed and all(v is not None for v in manual)):
                raise ConfigError("--coordinator_address, --num_processes and --process_id go "
                                  "together and need --distributed; pass all three with it, "
                                  "or none.")
            from metaunlab.train import parallel
            from metaunlab.train.pipeline import (
                train_and_evaluate,  # after flag parsing: fast --help
            )
            from metaunlab.train.preemption import Preempted

            if FLAGS.distributed:
                parallel.initialize_distributed(*manual)  # before anything touches a device
            try:
                train_and_evaluate(config, FLAGS.workdir)
            except Preempted as stop:
                print(f"preempted: {stop}", file=sys.stderr)
                sys.exit(PREEMPTED_EXIT_STATUS)

    app.run(run, flags_parser=flags_parser(default_config))


def flags_parser(default_config: str):
    """absl's flag parsing, with one sentence for a `--config.<field>` that names no field."""
    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except (AttributeError, KeyError):  # from a --config.<field> that names no field
            _fail_on_unknown_override(argv, default_config)
            raise

    return parse_flags


def _fail_on_unknown_override(argv: list[str], default_config: str) -> None:
    """End with one sentence naming the closest fields when a `--config.<field>` of `argv`
    names no field of the config file; return otherwise."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), default_config)
    path, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_config_file", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(variant) if variant else module.get_config()
    for arg in argv[1:]:
        if arg.startswith("--config."):
            field = arg[len("--config."):].split("=", 1)[0]
            if not _has_field(config, field):
                cli.fail(unknown_field_message(field, config))


def _has_field(config, path: str) -> bool:
    node = config
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node.keys():
            return False
        node = node[part]
    return True


def run_protocols(FLAGS, config_file: str, known: tuple[str, ...], data_dir_flag: bool) -> None:
    """Each protocol of `--protocols` in `<workdir>/<protocol>`, then one summary of all."""
    chosen = [p.strip() for p in FLAGS.protocols if p.strip()]
    unknown = [p for p in chosen if p not in known]
    if unknown or not chosen:
        raise ConfigError(f"--protocols={','.join(FLAGS.protocols)}: choose among "
                          f"{', '.join(known)}.")
    configs = {}
    for protocol in chosen:
        config = config_for_workdir(config_file, protocol,
                                    os.path.join(FLAGS.workdir or "", protocol))
        if data_dir_flag and FLAGS.data_dir:
            config.data.root = FLAGS.data_dir
        configs[protocol] = config
    if FLAGS.print_config:
        for protocol, config in configs.items():
            print(f"# protocol {protocol}\n{config}")
        return
    if not FLAGS.workdir:
        raise ConfigError("--workdir is not set; name a directory for the run's checkpoints "
                          "and results.")
    from metaunlab.train.pipeline import write_protocol_summary

    results = run_each({protocol: (config, os.path.join(FLAGS.workdir, protocol))
                        for protocol, config in configs.items()}, label="protocol",
                       processes=parallel_runs(FLAGS.parallel_runs, FLAGS.distributed))
    print(write_protocol_summary(FLAGS.workdir, results))


def define_parallel_runs_flag():
    return flags.DEFINE_integer(
        "parallel_runs", 0, "How many of the runs (protocols, folds) to train at once, each "
        "in its own process with its output in <its workdir>/log.txt; 1 runs them one after "
        "another in this process; 0 = 2 on a machine without accelerators, else 1.")


def parallel_runs(value: int, distributed: bool = False) -> int:
    """`--parallel_runs`, with 0 resolved: 2 where JAX can only use the CPU and the run is
    not multi-host, else 1 (two processes would contend for one accelerator's memory)."""
    if value < 0:
        raise ConfigError(f"--parallel_runs={value}; give 1 or more, or 0 for automatic.")
    if value:
        if value > 1 and distributed:
            raise ConfigError("--parallel_runs runs several processes on this host, which "
                              "--distributed cannot coordinate; use --parallel_runs=1.")
        return value
    return 2 if not distributed and not _accelerator_plugins() else 1


def _accelerator_plugins() -> list[str]:
    """The installed JAX accelerator plugins (CUDA, ROCm: "jax_plugins" entry points) and
    libtpu, found without starting a backend."""
    from importlib import metadata

    found = [entry.name for entry in metadata.entry_points(group="jax_plugins")]
    return found + (["libtpu"] if importlib.util.find_spec("libtpu") else [])


def run_each(runs: dict, *, label: str, processes: int = 1) -> dict:
    """`train_and_evaluate` for each `name: (config, workdir)`; the results by name. With
    `processes` > 1 that many run at once (`experiments.concurrent_runs`), else one after
    another in this process. On SIGTERM the runs save their state and the script exits with
    status 143."""
    if processes > 1 and len(runs) > 1:
        from .concurrent_runs import RunsPreempted, run_concurrently

        try:
            return run_concurrently(runs, label=label, processes=processes)
        except RunsPreempted as stop:
            print(f"preempted: {stop}", file=sys.stderr)
            sys.exit(PREEMPTED_EXIT_STATUS)
    from metaunlab.train.pipeline import train_and_evaluate
    from metaunlab.train.preemption import Preempted

    results = {}
    try:
        for name, (config, workdir) in runs.items():
            print(f"{label} {name}: {workdir}")
            results[name] = train_and_evaluate(config, workdir)
    except Preempted as stop:
        print(f"preempted: {stop}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_STATUS)
    return results


def register_config_overrides(config_file: str, variant: str) -> None:
    """Define `--config` for a script that builds its configs itself (`config_for_workdir`),
    so that `--config.<field>=` overrides parse; call before `app.run`."""
    try:
        config_flags.DEFINE_config_file("config", f"{config_file}:{variant}",
                                        "Overrides only: --config.<field>=<value>.",
                                        lock_config=True)
    except (AttributeError, KeyError):
        _fail_on_unknown_override(sys.argv, f"{config_file}:{variant}")
        raise


def config_for_workdir(config_file: str, variant: str, workdir: str):
    """Variant `variant` of `config_file` for a run in `workdir`: the config stored there
    when it holds a run, else the file's; then the `--config.<field>=` flags given now."""
    config = _config_variant(config_file, variant)
    if os.path.exists(os.path.join(workdir, "config.json")):
        return _stored_config_with_overrides(workdir, config)
    return _with_overrides(config)


def _config_variant(path: str, variant: str):
    module_spec = importlib.util.spec_from_file_location("_config_variant", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant)


def config_flag_value(FLAGS, data_dir_flag: bool):
    """The config to run: the `--config` file with its overrides, or, on a work dir that
    holds a run and without `--config`, the stored config with the overrides given now."""
    config = FLAGS["config"].value
    workdir = FLAGS.workdir
    if workdir and not FLAGS["config"].present and os.path.exists(
            os.path.join(workdir, "config.json")):
        config = _stored_config_with_overrides(workdir, config)
    if data_dir_flag and FLAGS.data_dir:
        config.data.root = FLAGS.data_dir
    return config

"""Speed and memory benchmark of SIB meta-training and evaluation.

    python -m experiments.benchmark [--quick | --smoke] [--json=FILE] [--only=sib_step,...]

Measures, after compilation, episodes per second, the peak memory of each compiled step
(XLA memory analysis) and compile times; see `experiments/tools/benchmark` for the cases. The full
suite takes several minutes on a 2-core CPU, `--quick` about 1-2 minutes, `--smoke` (tiny
sizes, for tests) seconds. Prints a table and writes the records to FILE as a JSON array.
"""

import json

from absl import app, flags

from . import cli

flags.DEFINE_bool("quick", False, "A short subset of the cases with short timing loops.")
flags.DEFINE_bool("smoke", False, "Tiny sizes, every kind of case once (seconds; for tests).")
flags.DEFINE_string("json", None, "Write the records to this file as a JSON array.")
flags.DEFINE_list("only", [], "Run only these case names (sib_step, cached_step, eval, "
                  "full_step, memory_target, torch_sib_step).")
flags.DEFINE_bool("torch", True, "Also time the eager PyTorch SIB step if torch is importable.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.set_default_verbosity()
    if FLAGS.quick and FLAGS.smoke:
        cli.fail("--quick and --smoke are exclusive; give one of them, or neither for the full "
                 "suite.")
    from metaunlab.outputs import check_output_file, write_output_text

    from .tools import benchmark  # after flag parsing: fast --help

    if FLAGS.json:
        with cli.user_errors():
            check_output_file(FLAGS.json, "--json")  # before minutes of timing

    mode = "smoke" if FLAGS.smoke else "quick" if FLAGS.quick else "full"
    env = benchmark.environment()
    print(f"benchmark ({mode}): jax {env['jax']} on {env['backend']} ({env['device']}), "
          f"{env['cpu_count']} CPUs, load average {env['load_avg_1min']}", flush=True)
    with cli.user_errors():
        records = benchmark.run(mode, only=FLAGS.only, with_torch=FLAGS.torch)
    print(benchmark.format_table(records))
    print()
    print(f"Reference figures (not measured here): {benchmark.REFERENCE_SOURCE}: "
          f"SIB head step {1e3 * benchmark.REFERENCE_SIB_STEP_S:.1f} ms, Conv-4-64 80x80 full "
          f"step {1e3 * benchmark.REFERENCE_CONV4_STEP_S:.0f} ms, one episode per step.")
    for line in benchmark.summary(records):
        print(line)
    if FLAGS.json:
        with cli.user_errors():
            write_output_text(FLAGS.json, json.dumps(records, indent=1) + "\n")
        print(f"wrote {len(records)} records to {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)

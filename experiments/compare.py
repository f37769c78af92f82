"""Compare few-shot methods on the same frozen features of a trained work dir.

    python -m experiments.compare --workdir=W [--episodes=FILE.json --image_root=DIR] \
        [--num_episodes=500] [--methods=simpleshot,pt_map,...] [--shots=1,5] \
        [--query_distribution=balanced,dirichlet:2] [--split=val]

Runs the inductive and transductive baselines of `metaunlab.methods` and W's SIB heads
(K = 0, 1, 3, 5) on identical episodes (default: seeded random test-split episodes, 1 and
5 shots for each n_way SIB was trained for, 15 queries per class). Writes W/compare.md,
W/compare.png and a "compare" section in W/results.json (with --split=val: compare_val.md,
compare_val.png and "compare_val"; likewise compare_train with --split=train).
"""


from absl import app, flags

from . import cli


def _positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


flags.DEFINE_string("workdir", None, "Work dir of a training run.", required=True)
flags.DEFINE_string("episodes", None, "Fixed episode file (reference JSON format).")
flags.DEFINE_string("image_root", None, "Folder the episode paths are relative to.")
flags.DEFINE_integer("num_episodes", 500, "Random test episodes per setting.")
flags.DEFINE_integer("seed", None, "Episode seed (default: the run's test.seed).")
flags.DEFINE_integer("n_query", 15, "Queries per class of the random episodes.")
flags.DEFINE_list("shots", ["1", "5"], "Shots of the random episodes.")
flags.DEFINE_list("ways", None, "Ways of the random episodes (default: every trained one).")
flags.register_validator("ways", lambda v: v is None or all(w.isdigit() and int(w) > 1 for w in v),
                         message="--ways must be integers > 1 separated by commas, e.g. 5,20.")
flags.DEFINE_list("methods", None, "Baselines to run (default: all).")
flags.DEFINE_list("sib_steps", ["0", "1", "3", "5"], "SIB steps K to evaluate.")
flags.DEFINE_list("sib_step_scales", ["1"],
                  "SIB also at these multiples of its trained step size, e.g. 0.25,0.5,1 "
                  "(names sib_k3_lr0.5x; 1 is sib_k3).")
flags.register_validator("sib_step_scales", lambda v: bool(v) and all(_positive(x) for x in v),
                         message="--sib_step_scales must be positive numbers separated by "
                                 "commas, e.g. 0.5,1.")
flags.DEFINE_enum("checkpoint", "last", ["last", "best"], "Which SIB checkpoint to use.")
flags.DEFINE_integer("chunk", 100, "Episodes per vmapped batch.")
flags.DEFINE_list("query_distribution", ["balanced"],
                  "How query sets split between classes, comma-separated: balanced, "
                  "dirichlet:ALPHA (Veilleux et al.'s imbalanced sets; alpha 2 is standard). "
                  "Each gives its own columns, on the same support sets.")
flags.DEFINE_enum("split", "test", ["train", "val", "test"],
                  "Split of the random episodes: val to choose without looking at the test "
                  "classes; train, the classes SIB was meta-trained on.")
flags.DEFINE_string("against", None,
                    "Another work dir trained on the same frozen features: its SIB heads run "
                    "on the same episodes (against_sib_k<K>), with the paired difference.")
FLAGS = flags.FLAGS



def main(argv):
    del argv
    cli.set_default_verbosity()
    from .tools.compare import output_name, run_compare

    with cli.user_errors():
        results = run_compare(
            FLAGS.workdir, episodes_file=FLAGS.episodes, image_root=FLAGS.image_root,
            num_episodes=FLAGS.num_episodes, seed=FLAGS.seed, n_query=FLAGS.n_query,
            shots=[int(s) for s in FLAGS.shots], methods=FLAGS.methods,
            sib_steps=[int(k) for k in FLAGS.sib_steps], checkpoint=FLAGS.checkpoint,
            sib_step_scales=[float(x) for x in FLAGS.sib_step_scales],
            chunk=FLAGS.chunk, query_distributions=FLAGS.query_distribution,
            ways=None if FLAGS.ways is None else [int(w) for w in FLAGS.ways],
            split=FLAGS.split, against=FLAGS.against)
    name = output_name(results)
    with open(f"{FLAGS.workdir}/{name}.md") as f:
        print(f.read())
    print(f"wrote {FLAGS.workdir}/{name}.md, {name}.png and results.json['{name}'] "
          f"in {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    app.run(main)

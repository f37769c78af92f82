"""Features in, SIB against ProtoNet and PT-MAP out, with the library alone.

    python docs/tutorial.py FEATS.npz [--iterations=2000]

FEATS.npz holds train/val/test `_features` (N, D) and `_labels` (N,) arrays from any
backbone (metaunlab/data/features.py). With nothing but the Omniglot archives, make one from
the demo's run:

    make demo
    python -m experiments.export_features --workdir=workdirs/omniglot/character --output=feats.npz
 SIB is meta-trained on the train split, selected on
val, and every method is evaluated on the same 5-way 1-shot test episodes, 15 unlabeled
queries per class.
"""

import argparse

import metaunlab
from metaunlab.data import EpisodeSampler, EpisodeShape
from metaunlab.data.features import load_feature_file


def main(path: str, iterations: int) -> dict[str, float]:
    data = load_feature_file(path)
    train, val, test = data["train"], data["val"], data["test"]
    sib = metaunlab.train_on_features(train.features, train.labels, n_way=5, n_shot=1,
                                      iterations=iterations, val_features=val.features,
                                      val_labels=val.labels)
    episodes = EpisodeSampler(test.labels, EpisodeShape(n_way=5, n_shot=1, n_query=15),
                              seed=0).sample(0, 500)
    accuracies = {}
    for method in (metaunlab.sib_method(sib, steps=3), metaunlab.get_method("protonet_cosine"),
                   metaunlab.get_method("pt_map")):
        result = metaunlab.evaluate(method, test.features, episodes)
        print(f"{method.name:16s} {result.accuracy:6.2f} +- {result.ci95:.2f}%")
        accuracies[method.name] = result.accuracy
    return accuracies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", help="the .npz of train/val/test features and labels")
    parser.add_argument("--iterations", type=int, default=2000, help="meta-training iterations")
    args = parser.parse_args()
    main(args.features, args.iterations)

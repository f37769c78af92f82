"""A tiny meta-training run that the device, multi-process and preemption tests start in
subprocesses (the test process has already fixed its JAX devices). Not a test module.

    python -m tests._tiny_run WORKDIR OUT.npz [--iterations N] [--checkpoint-every C]
        [--coordinator HOST:PORT --num-processes N --process-id I] [--pretrain-steps S]

Writes the final SIB parameters (and, with --pretrain-steps, the parameters after that many
pretraining steps) to OUT.npz as leaves in tree order, and OUT.json with what the run saw
(devices, processes, how the train step's inputs were sharded).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from tests._toy_meta_training import DIM, toy_features


def metatrain_config(iterations: int, checkpoint_every: int):
    import ml_collections

    return ml_collections.ConfigDict(dict(
        seed=3, iterations=iterations, batch_size=4, n_way=5, n_shot=1, n_query=3, sib_steps=1,
        inner_lr=1e-3, lr=1e-2, momentum=0.9, weight_decay=5e-4, grad_coeff=0.0,
        val_every=max(iterations // 2, 1), log_every=2, checkpoint_every=checkpoint_every))


def run_meta_train(workdir: str, iterations: int, checkpoint_every: int):
    """Meta-train on toy features; returns the last parameters (process-local arrays)."""
    from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
    from metaunlab.train import metatrain
    from metaunlab.train.metrics import MetricWriter

    feats, labels = toy_features()
    val_feats, val_labels = toy_features(n_classes=6, seed=1)
    val_episodes = EpisodeSampler(val_labels, EpisodeShape(5, 1, 3), seed=2).sample(0, 12)
    writer = MetricWriter(workdir)
    try:
        last, _ = metatrain.meta_train(
            metatrain_config(iterations, checkpoint_every), source=feats, train_labels=labels,
            feat_dim=DIM, val_feats=val_feats, val_episodes=val_episodes,
            workdir=f"{workdir}/mt", writer=writer)
    finally:
        writer.close()
    return last


def run_pretrain_steps(steps: int):
    """`steps` Conv-4 pretraining steps on a fixed batch of 8 images; returns the params."""
    import jax

    from metaunlab.backbones import Conv4, init_backbone
    from metaunlab.data import augment
    from metaunlab.train import optim, parallel, pretrain

    module = Conv4(width=8)
    backbone = init_backbone(module, 8, (16, 16, 1), seed=0)
    optimizer = optim.sgd_nesterov(0.05)
    mesh = parallel.data_mesh()
    state = parallel.replicate(pretrain.init_state(backbone, 4, optimizer, seed=0), mesh)
    step = pretrain.make_train_step(module, augment.OMNIGLOT_SHIFT, optimizer, mesh=mesh)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 16, 16, 1), dtype=np.uint8)
    labels = rng.integers(0, 4, 8).astype(np.int32)
    rows = parallel.process_rows(8, mesh)
    batch = parallel.global_batch((images[rows.start:rows.stop], labels[rows.start:rows.stop]),
                                  8, mesh)
    for _ in range(steps):
        state, _ = step(state, *batch)
    return jax.tree_util.tree_map(lambda x: x.addressable_data(0), state["params"])


def step_input_sharding() -> dict:
    """How the meta-training step shards a global batch of 4 episodes over the mesh."""
    import jax

    from metaunlab import sib
    from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
    from metaunlab.train import metatrain, optim, parallel

    feats, labels = toy_features()
    mesh = parallel.data_mesh()
    rows = parallel.process_rows(4, mesh)
    sampler = EpisodeSampler(labels, EpisodeShape(5, 1, 3), seed=1)
    local = metatrain.episodes_as_dict(sampler.sample(0, len(rows), first_episode=rows.start))
    batch = parallel.global_batch(local, 4, mesh)
    optimizer = optim.sgd_nesterov(0.1)
    state = parallel.replicate(
        metatrain.init_state(sib.init(jax.random.PRNGKey(0), 5, DIM), optimizer, 0), mesh)
    step = metatrain.make_train_step(optimizer, steps=1, inner_lr=1e-3, mesh=mesh)
    compiled = step.lower(state, None, parallel.replicate(feats, mesh), batch).compile()
    episodes_sharding = compiled.input_shardings[0][3]["support_idx"]
    shards = batch["support_idx"].addressable_shards
    return {"spec": str(episodes_sharding.spec), "devices": len(episodes_sharding.device_set),
            "shard_rows": sorted({s.data.shape[0] for s in shards}),
            "rows": [rows.start, rows.stop]}


def leaves(tree) -> list[np.ndarray]:
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("out")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--pretrain-steps", type=int, default=0)
    args = parser.parse_args()

    from metaunlab.train import parallel, workdir
    from metaunlab.train.preemption import Preempted

    if args.coordinator:
        parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    import jax

    try:
        params = run_meta_train(args.workdir, args.iterations, args.checkpoint_every)
    except Preempted as stop:
        print(f"preempted: {stop}", flush=True)
        sys.exit(143)
    arrays = leaves(params)
    if args.pretrain_steps:
        arrays += leaves(run_pretrain_steps(args.pretrain_steps))
    np.savez(args.out, *arrays)
    # A shared-workdir file: in a multi-process run only process 0 may write it.
    workdir.write_json_atomic(f"{args.workdir}/results.json",
                              {"written_by_process": jax.process_index()})
    with open(args.out.removesuffix(".npz") + ".json", "w") as f:
        json.dump({"devices": jax.device_count(), "processes": jax.process_count(),
                   "process_index": jax.process_index(), "sharding": step_input_sharding()}, f)


if __name__ == "__main__":
    main()

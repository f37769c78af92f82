"""Training: backbone pre-training, SIB meta-training, and the parts they share.

`pipeline.train_and_evaluate` runs the whole published procedure on a work dir;
`pretrain` and `metatrain` are its two stages; `train_loop` the loop they share, with
`optim`, `checkpoints`, `preemption`, `metrics` and the work-dir files (`workdir`,
`config_checks`, `feature_cache`); `parallel` shards a batch of episodes over devices.
"""

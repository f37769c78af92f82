"""Memory of compiled train steps with and without the memory levers (no step is run).

    python -m experiments.memory            # prints a markdown table

The CPU figures are in docs/distributed.md ("Memory levers"); XLA's CPU and accelerator
backends plan buffers differently, so read the numbers as ratios.
"""

import jax.numpy as jnp
from absl import app

from .tools import memory

ROWS = [
    ("SIB head on features, B=8, K=5", lambda: memory.sib_step(steps=5)),
    ("SIB head on features, B=8, K=5, remat", lambda: memory.sib_step(steps=5, remat=True)),
    ("SIB head on features, B=8, K=10", lambda: memory.sib_step(steps=10)),
    ("SIB head on features, B=8, K=10, remat", lambda: memory.sib_step(steps=10, remat=True)),
    ("images + frozen WRN-28-10 80px, B=8, K=5, f32", lambda: memory.image_step()),
    ("images + frozen WRN-28-10 80px, B=8, K=5, bf16",
     lambda: memory.image_step(dtype=jnp.bfloat16)),
    ("pretrain WRN-28-10 80px, batch 64, f32", lambda: memory.pretrain_step()),
    ("pretrain WRN-28-10 80px, batch 64, backbone_remat",
     lambda: memory.pretrain_step(remat=True)),
    ("pretrain WRN-28-10 80px, batch 64, bf16", lambda: memory.pretrain_step(dtype=jnp.bfloat16)),
]


def main(argv):
    del argv
    print("| train step | temp (MiB) | arguments (MiB) | outputs (MiB) |")
    print("|---|---:|---:|---:|")
    for name, measure in ROWS:
        m = measure()
        print(f"| {name} | {m['temp_mib']:.1f} | {m['arguments_mib']:.1f} | "
              f"{m['outputs_mib']:.1f} |", flush=True)


if __name__ == "__main__":
    app.run(main)

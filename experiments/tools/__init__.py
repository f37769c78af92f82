"""Tools over the library: the method comparison, run reports, the benchmark and memory study."""

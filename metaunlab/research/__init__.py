"""Research tools of the Omniglot studies, outside the library's core.

`protocols` and `folds` are the Omniglot evaluation protocols (held-out characters,
held-out alphabets) and their cross-validation folds; `step_tuning` chooses the synthetic
step size on validation episodes; `diagnostics` measures what the synthetic steps do.
"""

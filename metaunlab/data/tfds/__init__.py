"""TFDS: reading prepared datasets (`reading`, `omniglot`) and this package's builders
(`builders`, imported only when asked: it imports tensorflow_datasets)."""

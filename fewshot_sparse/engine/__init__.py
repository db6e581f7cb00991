"""fewshot_sparse.engine: the only training and evaluation loops, checkpoints, logging."""

"""fewshot_sparse.solvers"""

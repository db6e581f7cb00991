"""fewshot_sparse.heads"""

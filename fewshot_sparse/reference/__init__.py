"""fewshot_sparse.reference"""

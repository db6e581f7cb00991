"""fewshot_sparse.data"""

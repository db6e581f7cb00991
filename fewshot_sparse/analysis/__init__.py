"""fewshot_sparse.analysis"""

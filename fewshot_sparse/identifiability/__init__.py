"""fewshot_sparse.identifiability"""

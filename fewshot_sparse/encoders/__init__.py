"""fewshot_sparse.encoders"""

"""fewshot_sparse.implicit"""

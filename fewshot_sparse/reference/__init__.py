"""cvxpylayers versions of the heads' problems (slow, exact; for tests and benchmarks)."""

from fewshot_sparse.reference.group_lasso_svm import GroupLassoSVMReference

__all__ = ["GroupLassoSVMReference"]

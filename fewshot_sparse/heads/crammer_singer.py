"""MetaOptNet's SVM-CS head: the group-Lasso head with lambda1 = 0 fixed."""

from __future__ import annotations

from fewshot_sparse.heads.group_lasso_svm import GroupLassoSVMHead


class CrammerSingerSVMHead(GroupLassoSVMHead):
    """Crammer-Singer multiclass SVM, ``C = 1 / lambda2``.

    Defaults follow MetaOptNet's ``MetaOptNetHead_SVM_CS``: ``C_reg = 0.1`` gives
    ``lambda2 = 10``, and ``smoothing = 1.0`` adds the ``+ I`` MetaOptNet puts on the QP's
    kernel matrix for stability (the dual term (1 / (2 lambda2)) ||beta - Y||^2). Pass
    ``smoothing=0.0`` for the exact, unsmoothed SVM. ``learn_lambdas`` learns lambda2 only.
    """

    def __init__(
        self,
        lambda2: float = 10.0,
        smoothing: float = 1.0,
        tol: float = 1e-4,
        max_iter: int = 100,
        mode: str = "implicit",
        learn_lambdas: bool = False,
        learn_scale: bool = False,
        init_scale: float = 1.0,
        method: str = "ipm",
        cuda_graph: bool = True,
        compiled: bool = False,
    ):
        super().__init__(
            lambda1=0.0,
            lambda2=lambda2,
            smoothing=smoothing,
            tol=tol,
            max_iter=max_iter,
            mode=mode,
            learn_lambdas=learn_lambdas,
            learn_scale=learn_scale,
            init_scale=init_scale,
            method=method,
            cuda_graph=cuda_graph,
            compiled=compiled,
        )

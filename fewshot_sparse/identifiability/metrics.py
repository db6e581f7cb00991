"""Identifiability metrics: learned features F [n, d] against true factors Z [n, m].

All functions take numpy arrays or torch tensors and return plain floats / numpy arrays.
Formulas, and what each metric does and does not show: docs/identifiability.md.

- ``mcc``               mean |corr| after the best one-to-one feature/factor matching
                        (Pearson or Spearman); identifiability up to permutation and
                        element-wise rescaling (Spearman: element-wise monotone maps)
- ``linear_r2``         held-out R^2 of predicting Z linearly from F; identifiability up
                        to an invertible linear map
- ``dci``               Eastwood & Williams (2018) disentanglement and completeness from an
                        importance matrix of a per-factor linear model (Lasso by default)
- ``support_agreement`` after the MCC matching: each task's active features against the
                        factors the task truly depends on (precision, recall, F1, Jaccard)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D array [n, dim], got shape {a.shape}")
    return a


def _check_pair(features, factors):
    f, z = _np(features), _np(factors)
    if f.shape[0] != z.shape[0]:
        raise ValueError(f"features and factors need the same number of rows, "
                         f"got {f.shape[0]} and {z.shape[0]}")
    if not (np.isfinite(f).all() and np.isfinite(z).all()):
        raise ValueError("features or factors contain NaN or inf")
    return f, z


def correlation_matrix(features, factors, method: str = "pearson") -> np.ndarray:
    """[d, m] correlations between every feature and every factor; a constant column
    (e.g. a dead feature) correlates 0 with everything."""
    f, z = _check_pair(features, factors)
    if method == "spearman":
        f = np.apply_along_axis(rankdata, 0, f)
        z = np.apply_along_axis(rankdata, 0, z)
    elif method != "pearson":
        raise ValueError(f"unknown correlation method {method!r}; use 'pearson' or 'spearman'")
    f = f - f.mean(0)
    z = z - z.mean(0)
    fs, zs = np.linalg.norm(f, axis=0), np.linalg.norm(z, axis=0)
    fs[fs < 1e-12 * max(1.0, fs.max(initial=0.0))] = np.inf
    zs[zs < 1e-12 * max(1.0, zs.max(initial=0.0))] = np.inf
    return (f.T @ z) / np.outer(fs, zs)


@dataclass
class MCCResult:
    score: float  # mean |corr| over the min(d, m) matched pairs
    per_factor: np.ndarray  # [m] |corr| of each factor with its matched feature (nan if unmatched)
    feature_of_factor: np.ndarray  # [m] int, matched feature index, -1 if unmatched (d < m)
    corr: np.ndarray  # [d, m] the signed correlation matrix


def mcc(features, factors, method: str = "pearson") -> MCCResult:
    """Mean correlation coefficient: the best one-to-one matching of features to factors
    (Hungarian algorithm on |corr|), then the mean |corr| over matched pairs. With d > m the
    d - m worst features are left out; with d < m the unmatched factors count as 0 in
    ``score`` (the mean is over m factors), so missing factors are penalised."""
    corr = correlation_matrix(features, factors, method)
    d, m = corr.shape
    rows, cols = linear_sum_assignment(-np.abs(corr))
    feature_of_factor = np.full(m, -1, dtype=int)
    feature_of_factor[cols] = rows
    per_factor = np.full(m, np.nan)
    per_factor[cols] = np.abs(corr[rows, cols])
    score = float(np.nansum(per_factor) / m)
    return MCCResult(score, per_factor, feature_of_factor, corr)


def _split(n: int, train_fraction: float, seed: int):
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(train_fraction * n))
    if n_train < 2 or n - n_train < 2:
        raise ValueError(f"need at least 2 training and 2 held-out rows, got n={n}")
    return perm[:n_train], perm[n_train:]


def linear_r2(features, factors, train_fraction: float = 0.5, ridge: float = 1e-6,
              seed: int = 0):
    """Held-out coefficient of determination of the least-squares map [F, 1] -> Z.

    Fit on a random ``train_fraction`` of the rows (a tiny ridge ``ridge * n`` on the
    standardised features for numerical safety), score on the rest:
    R^2_j = 1 - sum (z_j - zhat_j)^2 / sum (z_j - mean z_j)^2 over the held-out rows.
    Returns (mean over factors, per-factor [m])."""
    f, z = _check_pair(features, factors)
    tr, te = _split(f.shape[0], train_fraction, seed)
    mu, sd = f[tr].mean(0), f[tr].std(0)
    sd[sd < 1e-12] = 1.0
    a_tr, a_te = (f[tr] - mu) / sd, (f[te] - mu) / sd
    zm = z[tr].mean(0)
    g = a_tr.T @ a_tr + ridge * len(tr) * np.eye(f.shape[1])
    beta = np.linalg.solve(g, a_tr.T @ (z[tr] - zm))
    resid = z[te] - (a_te @ beta + zm)
    denom = ((z[te] - z[te].mean(0)) ** 2).sum(0)
    r2 = 1.0 - (resid ** 2).sum(0) / np.maximum(denom, 1e-12)
    return float(r2.mean()), r2


def _lasso(x: np.ndarray, y: np.ndarray, alpha: float, iters: int = 500, tol: float = 1e-7):
    """min_B 1/(2n) ||Y - X B||_F^2 + alpha ||B||_1 (columns of Y independent), by FISTA.
    X [n, d] and Y [n, m] are standardised, so no intercept."""
    n = x.shape[0]
    g = x.T @ x / n
    c = x.T @ y / n
    step = 1.0 / max(np.linalg.eigvalsh(g)[-1], 1e-12)
    b = np.zeros((x.shape[1], y.shape[1]))
    v, t = b.copy(), 1.0
    for _ in range(iters):
        u = v - step * (g @ v - c)
        b_new = np.sign(u) * np.maximum(np.abs(u) - step * alpha, 0.0)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        v = b_new + ((t - 1.0) / t_new) * (b_new - b)
        if np.max(np.abs(b_new - b)) < tol:
            b = b_new
            break
        b, t = b_new, t_new
    return b


def importance_matrix(features, factors, regressor: str = "lasso", alpha: float = 0.01):
    """[d, m] importances R_ij = |beta_ij| of a linear model predicting standardised factor j
    from standardised features ("lasso": penalty ``alpha``; "ridge": penalty ``alpha * n``).

    Linear because sklearn is not a dependency and our features should relate to the factors
    linearly if identifiability holds (Eastwood & Williams used Lasso and random forests)."""
    f, z = _check_pair(features, factors)
    fsd, zsd = f.std(0), z.std(0)
    fsd[fsd < 1e-12] = np.inf  # dead features get zero weight
    zsd[zsd < 1e-12] = np.inf
    x = (f - f.mean(0)) / fsd
    y = (z - z.mean(0)) / zsd
    if regressor == "lasso":
        beta = _lasso(x, y, alpha)
    elif regressor == "ridge":
        n, d = x.shape
        beta = np.linalg.solve(x.T @ x + alpha * n * np.eye(d), x.T @ y)
    else:
        raise ValueError(f"unknown regressor {regressor!r}; use 'lasso' or 'ridge'")
    return np.abs(beta)


def _entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    if base < 2:
        return np.zeros(np.delete(p.shape, axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis)
    return h / np.log(base)


def dci(features, factors, regressor: str = "lasso", alpha: float = 0.01):
    """DCI disentanglement and completeness (Eastwood & Williams, ICLR 2018).

    From the importance matrix R [d, m]:
      D_i = 1 - H_m(R_i. / sum_j R_ij)   per feature,  D = sum_i rho_i D_i,
            rho_i = sum_j R_ij / sum_ij R_ij  (unimportant features weigh little)
      C_j = 1 - H_d(R_.j / sum_i R_ij)   per factor,   C = mean_j C_j
    (H_b: entropy in base b). Returns (D, C, R)."""
    r = importance_matrix(features, factors, regressor, alpha)
    d, m = r.shape
    total = r.sum()
    if total <= 0:
        return 0.0, 0.0, r
    row = r.sum(1)
    p_row = r / np.where(row > 0, row, 1.0)[:, None]
    dis = 1.0 - _entropy(p_row, m, axis=1)
    dis_score = float((row / total * dis).sum())
    col = r.sum(0)
    p_col = r / np.where(col > 0, col, 1.0)[None, :]
    comp = 1.0 - _entropy(p_col, d, axis=0)
    comp[col <= 0] = 0.0
    return dis_score, float(comp.mean()), r


def support_agreement(active, true_subsets, feature_of_factor) -> dict:
    """Does each task use the features matched to the factors it depends on?

    active            [T, d] bool, features used by each task (non-zero weight rows)
    true_subsets      [T, m] bool, the factors each task depends on
    feature_of_factor [m] int from ``mcc`` (-1 = factor unmatched)
    Per task: TP = #{true factors whose matched feature is active}; precision = TP / #active
    features (active features matched to no factor or to a wrong one are false positives),
    recall = TP / k, F1 their harmonic mean, Jaccard = TP / (#active + k - TP).
    Returns the means over tasks (a task with no active feature has precision 0)."""
    a = _np(active) > 0.5
    s = _np(true_subsets) > 0.5
    fof = np.asarray(feature_of_factor, dtype=int)
    if a.shape[0] != s.shape[0] or s.shape[1] != fof.shape[0]:
        raise ValueError(f"shape mismatch: active {a.shape}, true_subsets {s.shape}, "
                         f"feature_of_factor {fof.shape}")
    matched = np.zeros_like(s)  # [T, m]: the factor's matched feature is active
    ok = fof >= 0
    matched[:, ok] = a[:, fof[ok]]
    tp = (matched & s).sum(1).astype(float)
    n_active = a.sum(1).astype(float)
    k = s.sum(1).astype(float)
    precision = np.where(n_active > 0, tp / np.maximum(n_active, 1), 0.0)
    recall = np.where(k > 0, tp / np.maximum(k, 1), 0.0)
    f1 = np.where(precision + recall > 0,
                  2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    jaccard = tp / np.maximum(n_active + k - tp, 1)
    return {"precision": float(precision.mean()), "recall": float(recall.mean()),
            "f1": float(f1.mean()), "jaccard": float(jaccard.mean()),
            "active_fraction": float(a.mean())}

"""fewshot_sparse.analysis: per-task feature usage (statistics, figures, exports).

Pure functions on active masks [T, D], group norms [T, D] and class ids [T, N]:
:func:`compute_feature_usage` builds a :class:`FeatureUsageStats`;
:func:`feature_usage_figures` turns it into matplotlib Figures (e.g. for TensorBoard);
:func:`save_feature_usage` writes PNGs, .npz, CSV and a text summary.
Nothing here imports from above (no engine, no model): ``fewshot_sparse.apps.inspect``
runs a checkpoint on test episodes and hands the results to these functions.
"""

from fewshot_sparse.analysis.export import save_arrays, save_feature_usage, save_tables
from fewshot_sparse.analysis.figures import feature_usage_figures, save_figures
from fewshot_sparse.analysis.stats import (
    FeatureUsageStats,
    active_counts,
    compute_feature_usage,
    jaccard_matrix,
    mean_jaccard,
    shared_class_overlap,
    summary_text,
    usage_counts,
    usage_frequency,
    usage_order,
    usage_per_class,
)

__all__ = [
    "FeatureUsageStats", "active_counts", "compute_feature_usage", "feature_usage_figures",
    "jaccard_matrix", "mean_jaccard", "save_arrays", "save_feature_usage", "save_figures",
    "save_tables", "shared_class_overlap", "summary_text", "usage_counts",
    "usage_frequency", "usage_order", "usage_per_class",
]

"""fewshot-sparse: few-shot meta-learning with sparse linear base learners.

Data flows one way: cli -> engine -> model -> {encoders, heads} -> solvers -> implicit;
``data`` and ``analysis`` sit beside the chain.
"""

__version__ = "0.1.0"

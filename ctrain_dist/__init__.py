"""ctrain-dist: compare stochastic constrained-training algorithms at cluster scale.

The data flow is one direction, one module per arrow (see DESIGN.md):
spec → sweep (Ray Tune) → trainer → store (Parquet) → stats → report.
"""

__version__ = "0.1.0"

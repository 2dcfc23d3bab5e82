"""The shipped non-tabular example: a small CNN on scikit-learn's 8×8 digits with a synthetic
group attribute tied to the label (see ``data.py``), through ``model.factory`` and
``data.factory`` (``sweeps/digits-cnn.yaml``)."""

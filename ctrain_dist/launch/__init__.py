"""Where trials run: here (``ctrain train``), on a Ray cluster (Tune), or on SLURM."""

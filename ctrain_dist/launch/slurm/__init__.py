"""Sweeps on SLURM through submitit: the only package that knows SLURM and submitit.

Two modes, chosen by the cluster profile (``slurm/profiles/*.yaml``, :mod:`.profile`):

* **allocation**: one job of N nodes, one task per node. Task 0 starts a Ray head, the others
  join it as workers; each Ray node gets explicit ports (shifted by ``ports.stride`` per task,
  so tasks sharing a host never collide) and its own node-local temp dir. Ray runs with
  ``RAY_AUTH_MODE=token`` and a 0600 token file in the job folder, since anyone on the cluster
  network could otherwise run code as the user. Task 0 then runs
  :func:`~ctrain_dist.launch.ray_sweep.run_sweep` against that cluster with ``resume=True``.
* **array**: the pending trials, in packs of ``seeds_per_trial`` seeds of one configuration,
  given whole to the tasks of a job array (up to ``array.trials_per_task`` trials per task,
  a pack never split); each task trains its packs in-process and writes the store directly.

Preemption-proof by construction: **the store is the source of truth.** A requeued job (on a
timeout, a preemption or ``scontrol requeue``) runs again and first drops the trials the store
shows finished, so no finished trial runs twice and none is lost. Tune's own experiment state
is not restored: it would re-run trials whose rows reached the store after its checkpoint.

One module per job, in the order a sweep meets them:

=====================  ===================================================================
``profile.py``         the cluster profile: what to ask SLURM for, validated whole
``layout.py``          where trials go: Ray nodes and their ports, or packs per array task;
                       requests that cannot fit are refused here, before submitting
``submit.py``          executors, job scripts, token, dry run, submission, following
``jobs.py``            the callables submitit pickles and the tasks run (one per mode)
``environment.py``     the one place SLURM's environment is read (``task_context``)
``node_processes.py``  the Ray daemons a task starts, stopped by PID
``accounting.py``      ``sacct`` states and the submissions file, for ``ctrain status``
=====================  ===================================================================

This file imports nothing: ``ctrain status`` imports :mod:`.accounting`, which runs this file
first, and must not pay for torch or Ray. Import what you need from its module.
"""

"""One trial, or a pack of seeds, trained to its budget, its rows sent to a sink.

* ``runner``: :func:`~ctrain_dist.trial.runner.run_pack`, what every launcher calls: one
  pack, its failures recorded and retried.
* ``loop``: the one training loop (budget, evaluation cadence, divergence, checkpoints,
  records), over a learner.
* ``learner``: what the loop trains; ``ModelLearner`` for one model (DDP included).
* ``packed``: K seeds stacked (``StackedMLP``, ``PackedLearner``); ``stacked_module``: a
  user's model stacked through ``torch.func`` (``StackedModule``).
* ``sink``: the ``Sink`` protocol rows go to; ``records``: the rows themselves.
* ``model``, ``metrics``, ``distributed``: the network, full-split evaluation, exact data
  parallelism.
"""

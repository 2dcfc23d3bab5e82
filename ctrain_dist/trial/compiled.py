"""Compiled training steps (``training.compile``): the whole step, or the oracle alone.

The whole step, one graph: for an algorithm that allows it (``Algorithm.compiles_whole``:
ALM, SSL-ALM, iALM, the switching subgradient method) the call ``algorithm.step(estimate)``
is traced whole (``fullgraph``): the oracle (index gather, forward pass, constraint statistics
and readings), the gradients, the dual update, the switch and the primal update, so Inductor
fuses the step's many small operations and their per-operation overhead goes. Two things make
the step traceable, both set after its first, eager step (which builds the optimiser's lazy
state): gradients by ``torch.autograd.grad`` rather than ``Tensor.backward()``
(``Algorithm.gradients_by_grad``; Dynamo traces the former with ``trace_autograd_ops``, not
the latter), and a torch optimiser replaced by its functional stand-in on the same state
tensors (``algorithms/functional_primal.py``: Dynamo breaks the graph around
``Optimizer.step`` and guards it by identity, so each trial's optimiser would compile again).
The state stays the optimiser's, so ``state_dict`` and resume are unchanged. One graph per
algorithm class, options and shapes serves every later trial of them in the process.

The oracle alone, otherwise: ``learner.estimate``, the very code the eager loop runs, so every
constraint, packed seed and sampler option is covered by construction; AOTAutograd compiles
its backward pass with it, so the algorithm's ``backward()`` runs compiled code, and the
update runs eagerly between graphs. This is the path of an algorithm that does not declare
``compiles_whole``, of data-parallel trials (below), of an optimiser the stand-in does not
cover (``functional_primal.functional_optimizer``), and of a step whose whole trace fails:
that falls back here with one warning. One compiled oracle per shape serves every algorithm.

Data-parallel trials compile the oracle alone: DDP averages gradients in hooks that
``Tensor.backward()`` runs and ``autograd.grad`` does not, and the all-reduce of exact
statistics (``distributed.exact_statistics``) is excluded from tracing, a graph break, so the
collective is exactly the eager one. Stochastic Ghost's LP and QP solves stay on the host
(``spec.compile_warnings``).

Minibatches are drawn on the host, never traced: before each step, each sampler's draws for it
are made by the sampler itself, in order, and handed out inside the graph (:class:`_Prefetched`),
so the minibatch stream is the eager one, the sampler's Python counters and generator stay out
of the graph, and every call sees the same shapes (samplers never yield a smaller last batch:
an epoch's tail is reshuffled, ``data/sampler.py``). How many draws a step makes is learned
from the first step, which runs eagerly (it also builds lazily made state: optimiser moments,
constraint caches) and must then stay fixed; a step that leaves a draw unused raises rather
than shift the stream. An algorithm whose draws vary (``batchable = False``: Ghost's multilevel
sample) draws through a call excluded from tracing instead.

Compile time is counted apart (:attr:`Step.compile_seconds`): a step during which Dynamo made
a graph is counted whole as compile time, not training time, so the loop's clock (and a
``budget.seconds``) is not charged for it and the store records it (``compile_time_s``). Why:
the compile cost depends on the node's caches and on which trial an actor ran first, not on
the algorithm, and charging it would let that decide how far a time-budgeted trial trains.

Caches: Dynamo keeps its graphs on the code objects of the traced functions for the process's
lifetime, keyed by its guards (algorithm, shapes, dtypes, devices, the constraint's settings),
so a reused Ray actor's next trial of the same shape finds its step compiled; the wrappers are
made once per mode (:func:`_compiled`, :func:`_compiled_whole`) and the recompile limit is
raised so that an actor can hold many shapes. A whole step's step sizes and weights are graph
inputs (``Algorithm.hyperparameters_as_tensors`` and the optimiser's settings as 0-dim
tensors), so trials that differ in them share its graph; a setting read as a Python number
(ALM's ``dual_bound``, an option that changes the step's structure) is a guard, and a trial
with a new value compiles again (Dynamo makes a number it saw change a graph input after a
while). Python counters (the iteration) are guards too: the process's first compiled whole
step specialises on it and the next generalises it, for every later algorithm too (they share
:func:`_whole_step`), so only the process's first such trial compiles twice.
Inductor's on-disk cache (:func:`use_compile_cache`) serves the node's other processes.
Recompilation is guarded: a trial whose steps compile again more than
:data:`RECOMPILE_WARNING` times after its first compiled step warns once.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._dynamo

from ctrain_dist.algorithms import Algorithm, Sample, StepInfo
from ctrain_dist.algorithms.base import Estimate
from ctrain_dist.algorithms.functional_primal import FunctionalOptimizer, functional_optimizer
from ctrain_dist.trial.learner import Learner

RECOMPILE_WARNING = 3
"""More compiling calls than this after a trial's first compiled call warn once."""
RECOMPILE_LIMIT = 64
"""Dynamo's cache entries per code object (8 by default): a reused actor trains many shapes,
dtypes and constraint settings, each its own entry of the one compiled oracle."""
CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
DRAW_METHODS = ("next", "next_batch")
"""The sampler methods the oracle draws minibatches through (plain and streaming samplers)."""


def use_compile_cache(folder: Path) -> Path:
    """Point Inductor's on-disk cache at ``folder/<host>`` unless the user chose one already
    (``TORCHINDUCTOR_CACHE_DIR``); returns the folder in use.

    Per node: Inductor compiles CPU code for the host's own instruction set, so a cache
    shared between different nodes' CPUs could hand one node another's code. Set before the
    first compile of the process (Inductor reads the variable when it looks up its cache).
    """
    chosen = os.environ.get(CACHE_VARIABLE)
    if chosen:
        return Path(chosen)
    node = folder / socket.gethostname()
    node.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_VARIABLE] = str(node)
    return node


def _graphs() -> int:
    """Graphs Dynamo has made in this process so far (recompilations included)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _oracle(learner: Learner) -> Sample:
    return learner.estimate()


def _whole_step(algorithm: Algorithm, estimate: Estimate) -> StepInfo:
    return algorithm.step(estimate)


def _configure() -> None:
    """Dynamo's settings for these steps (process-wide; only these steps compile here): more
    cache entries per code object, and ``torch.autograd.grad`` traced into the graph."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.trace_autograd_ops = True


@functools.cache
def _compiled(mode: str) -> Callable[[Learner], Sample]:
    """The process's one compiled oracle of each mode (its graphs are Dynamo's, by guards)."""
    _configure()
    return torch.compile(_oracle, mode=mode)


@functools.cache
def _compiled_whole(mode: str) -> Callable[[Algorithm, Estimate], StepInfo]:
    """The process's one compiled whole step of each mode: one graph (``fullgraph``) per
    algorithm class, options and shapes, all in Dynamo's cache of this one function."""
    _configure()
    return torch.compile(_whole_step, mode=mode, fullgraph=True)


class _Prefetched:
    """A sampler's draw method, replaced: draws made ahead on the host, handed out in order.

    Installed as an instance attribute over the method (``isinstance`` and every other
    attribute of the sampler stay its own); :meth:`fill` calls the original.
    """

    def __init__(self, original: Callable[[], Any]) -> None:
        self.original = original
        self.ready: list[Any] = []

    def fill(self, count: int) -> None:
        self.ready.extend(self.original() for _ in range(count))

    def __call__(self) -> Any:
        return self.ready.pop(0)


class Step:
    """One training step of a learner: eager, or with its oracle compiled in ``mode``;
    counts compile time (module docstring)."""

    def __init__(self, learner: Learner, mode: str | bool) -> None:
        self.learner = learner
        self.mode = mode or None
        self.prefetched = bool(mode) and learner.algorithm.batchable
        """Whether the draws are made ahead (fixed per step); else excluded from tracing."""
        self.whole = (
            self.prefetched
            and learner.algorithm.compiles_whole
            and not getattr(getattr(learner, "workers", None), "distributed", False)
        )
        """Whether the whole step is one graph; else the oracle alone is compiled."""
        self.compile_seconds = 0.0
        """Seconds of this learner's steps spent compiling (see the module docstring)."""
        self.recompiles = 0
        """Compiling calls after the first compiled call."""
        self.calls = 0
        self._draws: dict[tuple[int, str], _Prefetched] = {}
        self._per_step: int | None = None
        self._compiled_once = False
        self._warned = False
        if self.mode:
            self._estimate = functools.partial(_compiled(self.mode), learner)
            self._whole = _compiled_whole(self.mode)
        if self.mode and not self.prefetched:
            self._install(torch.compiler.disable)

    def _install(self, wrap: Callable[[Callable[[], Any]], Any]) -> None:
        """Replace every sampler's draw methods by ``wrap(original)``."""
        for index, sampler in enumerate(self.learner.samplers):
            for name in DRAW_METHODS:
                if hasattr(sampler, name):
                    replacement = wrap(getattr(sampler, name))
                    setattr(sampler, name, replacement)
                    if isinstance(replacement, _Prefetched):
                        self._draws[(index, name)] = replacement

    def __call__(self) -> StepInfo:
        self.calls += 1
        learner = self.learner
        if self.mode is None:
            return learner.algorithm.step(learner.estimate)
        if not self.prefetched:
            return self._timed(lambda: learner.algorithm.step(self._retaining_estimate))
        if self._per_step is None:
            return self._first_step()
        for draw in self._draws.values():
            draw.fill(self._per_step)
        info = self._timed(self._compiled_step)
        if any(draw.ready for draw in self._draws.values()):
            raise RuntimeError(
                f"{learner.algorithm.name} drew fewer minibatches than in its first step; a "
                "compiled step needs a fixed number of draws (set training.compile: false)"
            )
        return info

    def _compiled_step(self) -> StepInfo:
        """The whole step's graph, or the algorithm's update around the compiled oracle."""
        algorithm = self.learner.algorithm
        if self.whole:
            try:
                return self._whole(algorithm, self.learner.estimate)
            except torch._dynamo.exc.TorchDynamoException as error:
                self._leave_whole(error)  # raised while compiling, before any state moved
        return algorithm.step(self._estimate)

    def _enter_whole(self) -> None:
        """Make the algorithm's step traceable: gradients by ``autograd.grad``, a torch
        optimiser replaced by its functional stand-in on the same state; if the optimiser
        has none, the oracle alone is compiled."""
        algorithm = self.learner.algorithm
        optimizer = getattr(algorithm, "optimizer", None)
        if isinstance(optimizer, torch.optim.Optimizer):
            functional = functional_optimizer(optimizer)
            if functional is None:
                self.whole = False
                return
            algorithm.optimizer = functional
        algorithm.gradients_by_grad = True
        algorithm.hyperparameters_as_tensors()

    def _leave_whole(self, error: Exception) -> None:
        """Back to the compiled oracle, with one warning saying why."""
        algorithm = self.learner.algorithm
        if isinstance(getattr(algorithm, "optimizer", None), FunctionalOptimizer):
            algorithm.optimizer = algorithm.optimizer.wrapped
        algorithm.gradients_by_grad = False
        self.whole = False
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(
            f"training.compile: {algorithm.name}'s step cannot be compiled whole ({reason}); "
            "its oracle is compiled alone",
            RuntimeWarning,
            stacklevel=3,
        )

    def _retaining_estimate(self) -> Sample:
        """The compiled oracle for an algorithm that takes several gradients of one sample
        (Ghost's ``autograd.grad(..., retain_graph=True)`` per row of its Jacobian): its
        backward is compiled without donated buffers, which allow one backward pass only."""
        with torch._functorch.config.patch(donated_buffer=False):
            return self._estimate()

    def _first_step(self) -> StepInfo:
        """Eager, counting its draws; then the draws of later steps are prefetched."""
        before = self.learner.estimates
        info = self.learner.algorithm.step(self.learner.estimate)
        self._per_step = self.learner.estimates - before
        self._install(_Prefetched)
        if self.whole:
            self._enter_whole()
        return info

    def _timed(self, call: Callable[[], StepInfo]) -> StepInfo:
        """``call()``, its time counted as compile time when Dynamo made a graph in it."""
        graphs, started = _graphs(), time.perf_counter()
        info = call()
        if _graphs() == graphs:
            return info
        self.compile_seconds += time.perf_counter() - started
        if self._compiled_once:
            self.recompiles += 1
            if self.recompiles > RECOMPILE_WARNING and not self._warned:
                self._warned = True
                warnings.warn(
                    f"training.compile: {self.learner.algorithm.name}'s step recompiled "
                    f"{self.recompiles} times by step {self.calls} (see TORCH_LOGS=recompiles)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._compiled_once = True
        return info

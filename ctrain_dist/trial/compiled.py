"""Compiled training steps (``training.compile``): the oracle under torch.compile.

What is compiled: the learner's oracle, ``learner.estimate`` (index gather, forward pass,
constraint statistics and readings, ``vmap`` over packed seeds, the empty-group counts), the
very code the eager loop runs, so nothing is written twice and every constraint, packed seed
and sampler option is covered by construction. AOTAutograd compiles its backward pass with
it, so the algorithm's ``backward()`` runs compiled code too. The algorithm's update (primal
optimiser, dual step, switching ``where``, logged values) runs eagerly between the graphs.

Why not the whole step: torch 2.13's Dynamo cannot keep an algorithm's ``Tensor.backward()``
and its ``torch.optim`` step in one graph (``backward`` breaks the graph unless
``trace_autograd_ops``, which then refuses the gradient of a tensor made before a break, and
torch.optim breaks the graph around its step by design and is guarded by the optimiser's
identity, so each trial's new optimiser would compile again). Compiled as it is, the step
becomes several graphs whose entry guards cost more than the fused update saves: for ALM in
``benchmarks/bench_compile.py``'s setting on this CPU (5 interleaved repetitions, thread CPU
time), the whole step compiled cost 1.03× the eager step, the oracle alone 0.83×.

Data-parallel trials: the all-reduce of exact statistics (``distributed.exact_statistics``) is
excluded from tracing, a graph break, so the collective is exactly the eager one. Stochastic
Ghost's LP and QP solves stay on the host (``spec.compile_warnings``).

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
so a reused Ray actor's next trial of the same shape finds its oracle compiled; the wrapper is
made once per mode (:func:`_compiled`) and the recompile limit is raised so that an actor can
hold many shapes. Inductor's on-disk cache (:func:`use_compile_cache`) serves the node's other
processes. Recompilation is guarded: a trial whose steps compile again more than
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

from ctrain_dist.algorithms import Sample, StepInfo
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


@functools.cache
def _compiled(mode: str) -> Callable[[Learner], Sample]:
    """The process's one compiled oracle of each mode (its graphs are Dynamo's, by guards)."""
    torch._dynamo.config.recompile_limit = max(
        torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT
    )
    return torch.compile(_oracle, mode=mode)


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
        info = self._timed(lambda: learner.algorithm.step(self._estimate))
        if any(draw.ready for draw in self._draws.values()):
            raise RuntimeError(
                f"{learner.algorithm.name} drew fewer minibatches than in its first step; a "
                "compiled step needs a fixed number of draws (set training.compile: false)"
            )
        return info

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

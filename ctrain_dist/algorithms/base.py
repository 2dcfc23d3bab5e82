"""The contract every algorithm keeps: torch.optim's shape with a stochastic oracle.

An algorithm is built from the model's parameters, the number of constraint values ``m`` and
its validated hyperparameters, and advances with ``step(estimate)``. ``estimate()`` draws a
fresh minibatch and returns a :class:`Sample` (read through :func:`draw`): the mean objective
``loss`` and the ``m`` surrogate constraint values ``c`` (feasible when ``<= 0``), both
attached to the autograd graph of the current parameters, plus their detached ``decision``
values and the ``defined`` mask. Methods that need independent samples (SSL-ALM's second
constraint sample, Ghost's multilevel sample) call it again; each call costs one minibatch,
which the trainer counts.

Proxy constraints (Cotter et al. 2019; Cooper's ``strict_violation``): the surrogate ``c`` is
what the primal gradient follows; ``decision`` (the hard 0/1 rate for rate constraints, ``c``
itself for the others) is what multiplier updates, switching decisions and feasibility tests
read. Empty groups: where ``defined`` is false the minibatch held no row of a group (or
(group, label) cell) the value compares; ``c`` and ``decision`` read 0 there with no
gradient, and each algorithm leaves that value's multiplier and controller state as they were
(``Multiplier.ascend``'s ``where``), as Cooper's indexed multipliers do. An oracle may return
a bare ``(loss, c)`` pair instead: a constraint that is its own decision value and is always
defined (test problems, smooth constraints).

Why an oracle rather than ``(loss, c)`` arguments: the number of samples per step is the
algorithm's choice, and under data parallelism ``estimate`` is where statistics are
all-reduced, so every rank sees the same ``c`` and takes the same switching and dual decisions
without further messages.

GPU-ready invariant: ``step`` never moves data to the host. No ``.item()``, ``float(t)``,
``bool(t)`` or Python ``if`` on a tensor's value; switching decisions are ``torch.where``,
multipliers are tensors on the parameters' device and dtype, and ``step`` returns detached
0-dim tensors (``loss`` at least) that the trainer reads only at evaluation points. A host
sync per step would serialise the GPU queue with Python and cost more than a small MLP's whole
step. The one documented exception is Stochastic Ghost's QP subproblem, solved on the host.

``state_dict()`` round-trips everything needed to resume the same trajectory bitwise: primal
optimiser state, multipliers, smoothing centres, controller memories, step counters and any
random generator the algorithm owns. It is composed once, here: a subclass creates its state
in ``_init_state`` and names the attributes in ``state_attributes``; ``state_dict`` saves the
iteration counter and each of them under its name, ``load_state_dict`` restores them in place
of the fresh ones. Multipliers are :class:`~ctrain_dist.algorithms.multiplier.Multiplier`
objects among that state, and ``multipliers()`` reads them, so no algorithm writes either.

Subclass contract: ``step`` and the class variables below, plus ``state_attributes`` with
``_init_state`` when there is state beyond the iteration counter; nothing else needs
overriding.

Packed seeds (``seeds=K``, see ``ctrain_dist/trial/packed.py``): every parameter then carries a
leading seed dimension, ``estimate()`` returns ``loss: [K]`` and ``c: [K, m]``, and all state
gains the same leading dimension (multipliers ``[K, m]``, logged values ``[K]``; the sample's
``decision`` and ``defined`` are ``[K, m]`` too). Steps are
written once for both layouts: per-seed quantities broadcast over the leading dimension
(``_per_seed``), per-seed norms reduce over all but it (``_seed_sum``), and backward runs on
the sum of the seeds' objectives, whose gradient in each seed's slice of the stacked
parameters is that seed's own gradient because the slices are disjoint. Without ``seeds``
every shape is what it was (``batch_shape == ()``). An algorithm whose step cannot be batched
(host-side solves per seed) sets ``batchable = False`` and is trained one seed at a time.

Packed configurations (``configurations_per_trial``): a pack's members may also differ in the
scalar hyperparameters the algorithm names in ``member_hyperparameters``. The algorithm is then
built from one hyperparameter model per member, and a step reads each such value through
:meth:`Algorithm.hyper`: a Python number when every member shares it (one model, or seeds of
one configuration: the arithmetic of an unpacked step, bit for bit), else a ``[K]`` tensor on
the device shaped to broadcast against what it multiplies. ``self.hp`` then refuses to give a
differing value as a plain attribute (``members.MemberHyperparameters``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar, cast

import torch
from pydantic import BaseModel, ConfigDict

from ctrain_dist.algorithms.members import (
    MemberHyperparameters,
    differing_fields,
    member_tensor,
)
from ctrain_dist.algorithms.multiplier import Multiplier


class Sample(NamedTuple):
    """One oracle call: a fresh minibatch's estimates (module docstring)."""

    loss: torch.Tensor
    """Mean objective, differentiable; 0-dim, or ``[K]`` for packed seeds."""
    c: torch.Tensor
    """Surrogate constraint values, differentiable: what the primal gradient follows."""
    decision: torch.Tensor
    """Detached values that multipliers, switching and feasibility tests read."""
    defined: torch.Tensor
    """Bool: which values this minibatch defines (no empty group or cell)."""
    terms: torch.Tensor | None = None
    """The differentiable values of the algorithm's ``training_terms`` on the same minibatch
    (``[k]``, ``[K, k]`` packed); ``None`` when it declares none."""


class Term(NamedTuple):
    """A training-only term an algorithm asks the oracle for: a constraint kind and its
    options, built like a spec's constraint (``Sample.terms`` holds its value minus ``bound``)
    but never reported or judged; the spec's constraints stay what the trial is judged on."""

    kind: str
    options: dict[str, Any]
    bound: float = 0.0


Estimate = Callable[[], Sample | tuple[torch.Tensor, torch.Tensor]]
"""The stochastic oracle: a fresh minibatch's :class:`Sample`, or a bare ``(loss, c)``."""


def draw(estimate: Estimate) -> Sample:
    """Call the oracle once; a bare ``(loss, c)`` becomes a sample whose decision values are
    ``c`` and which defines every value."""
    drawn = estimate()
    if isinstance(drawn, Sample):
        return drawn
    loss, c = drawn
    return Sample(loss, c, c.detach(), torch.ones_like(c, dtype=torch.bool))


StepInfo = Mapping[str, torch.Tensor]
"""What ``step`` returns: detached tensors worth logging, ``loss`` among them; 0-dim, or one
value per seed (``[K]``) for packed seeds. Eager steps return a :class:`StepLog`."""

LogEntry = torch.Tensor | Callable[[], torch.Tensor]
"""An algorithm's own logged value, or how to compute it from tensors its step had."""


class StepLog(Mapping[str, torch.Tensor]):
    """A step's log (``info``), each entry computed when read, detached.

    Why lazy: the training loop reads ``loss`` only, at evaluation points, yet every step
    would otherwise detach it and build the worst violation and the largest multiplier, a
    reduction or two each. On a small model a step is mostly per-operation dispatch, and
    these operations, run after the backward pass has evicted the dispatcher's code from the
    caches, cost about 2% of an ALM step. The log holds the step's own tensors (its loss,
    decision values and multipliers; the multipliers are replaced, never written in place,
    by later steps), and an algorithm's entry given as a callable is bound to tensors of this
    step (``functools.partial``), so a late read gives the step's own value.
    """

    __slots__ = ("_decision", "_duals", "_equality", "_extra", "_loss")

    def __init__(
        self,
        loss: torch.Tensor,
        decision: torch.Tensor,
        duals: torch.Tensor | None,
        extra: dict[str, LogEntry],
        equality: torch.Tensor | None = None,
    ) -> None:
        self._loss, self._decision, self._duals, self._extra = loss, decision, duals, extra
        self._equality = equality

    def __getitem__(self, key: str) -> torch.Tensor:
        if key == "loss":
            return self._loss.detach()
        if key == "max_violation":
            return max_violation(self._decision, self._equality)
        if key == "max_multiplier" and self._duals is not None:
            return largest(self._duals)
        entry = self._extra[key]
        return (entry if isinstance(entry, torch.Tensor) else entry()).detach()

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def _keys(self) -> list[str]:
        duals = [] if self._duals is None else ["max_multiplier"]
        return ["loss", "max_violation", *duals, *self._extra]

    def computed(self) -> dict[str, torch.Tensor]:
        """Every entry, computed now (what a traced step returns)."""
        return {key: self[key] for key in self._keys()}


class Hyperparameters(BaseModel):
    """Base of each algorithm's hyperparameters: unknown names are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


HP = TypeVar("HP", bound=Hyperparameters)


class Algorithm(ABC, Generic[HP]):
    """A stochastic (constrained) training algorithm over a list of parameters.

    Generic in its hyperparameters' model, so that ``self.hp`` has the subclass's fields.
    """

    name: ClassVar[str]
    constrained: ClassVar[bool]
    paper: ClassVar[str]
    hyperparameters: ClassVar[type[Hyperparameters]]
    data_parallel: ClassVar[bool] = True
    """Whether the update is exact under DDP: true when it reads gradients through
    ``backward()`` (DDP averages them); false when it takes ``torch.autograd.grad`` itself."""
    batchable: ClassVar[bool] = True
    """Whether ``step`` broadcasts over a leading seed dimension (packed seeds); false when it
    solves subproblems on the host, one seed at a time."""
    state_attributes: ClassVar[tuple[str, ...]] = ()
    """The attributes ``state_dict`` saves besides ``iteration``, each under its name: tensors
    or lists of tensors (per-seed state), :class:`Multiplier` objects and anything else with
    ``state_dict``/``load_state_dict`` (a torch optimiser), a ``torch.Generator``, or Python
    numbers. The multipliers among them, in this order, are ``multipliers()``."""
    late_state_attributes: ClassVar[frozenset[str]] = frozenset()
    """Those of ``state_attributes`` added after checkpoints had been written without them: a
    checkpoint lacking one resumes with the fresh value ``_init_state`` made, which the
    algorithm keeps equal to what the older code's behaviour amounts to."""
    member_hyperparameters: ClassVar[frozenset[str]] = frozenset()
    """The scalar hyperparameters whose values may differ between the members of one pack,
    each read in ``step`` through :meth:`hyper` (module docstring); a field not named here
    must be equal across a pack. None: configurations of this algorithm never pack."""
    takes_equalities: ClassVar[bool] = False
    """Whether the method handles equality constraints :math:`h(x) = 0` (``equality``): its
    multipliers of them are free in sign and its penalties act on :math:`h`, not
    :math:`[h]_+`. The others refuse them rather than treat them as inequalities."""
    dual_overrides: ClassVar[frozenset[str]] = frozenset()
    """Which per-constraint settings the method honours (``dual_lr``: its dual step size,
    ``dual_bound``: its multiplier bound; a spec constraint's own, given per value as
    ``dual_lrs``, ``dual_bounds``). The others refuse them: they have no such step or bound."""
    compiles_whole: ClassVar[bool] = False
    """Whether ``training.compile`` may trace ``step`` whole, oracle, gradients and updates in
    one graph (``trial/compiled.py``): true when it takes gradients only through
    :meth:`_backward`, steps a primal optimiser only through ``self.optimizer.step()`` and
    reads no tensor on the host. Otherwise only the oracle is compiled."""
    gradients_by_grad: bool = False
    """Set by a compiled step: :meth:`_backward` then takes ``torch.autograd.grad``, which
    Dynamo traces into the step's graph, instead of ``Tensor.backward()``, which it cannot."""

    @classmethod
    def initial_multiplier(cls, hp: Hyperparameters) -> float:
        """Where this method's multipliers start, given its hyperparameters: 0 here; a method
        whose multipliers must stay positive starts them above (a constraint's ``dual_bound``
        must not lie below it, ``spec.parse``)."""
        return 0.0

    @classmethod
    def training_terms(cls, hp: Hyperparameters) -> tuple[Term, ...]:
        """The terms besides the spec's constraints that this method's step reads from the
        oracle (``Sample.terms``), given its hyperparameters; none here (a regulariser
        baseline such as ``fairret`` declares its loss)."""
        return ()

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        num_constraints: int,
        hp: HP | Sequence[HP],
        seeds: int | None = None,
        equality: Sequence[bool] | None = None,
        member_seeds: Sequence[int] | None = None,
        dual_lrs: Sequence[float | None] | None = None,
        dual_bounds: Sequence[float | None] | None = None,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("an algorithm needs at least one parameter")
        self._overrides = _per_value_overrides(
            {"dual_lr": dual_lrs, "dual_bound": dual_bounds}, num_constraints, self.params[0]
        )
        """``dual_overrides`` given: name → (``[m]`` mask of values that set it, their values)."""
        unread = sorted(set(self._overrides) - self.dual_overrides)
        if unread:
            raise ValueError(f"{self.name} has no per-constraint {', '.join(unread)}")
        if member_seeds is not None and len(member_seeds) != (seeds or 1):
            raise ValueError(f"{len(member_seeds)} member seeds for {seeds or 1} members")
        self.member_seeds = None if member_seeds is None else [int(s) for s in member_seeds]
        """Each member's trial seed, from which a method that draws its own random numbers
        (the switching subgradient's random output) draws them, so that a packed member draws
        what it draws alone; None when not given (such a method then draws its keys from
        torch's global generator)."""
        if equality is not None and len(equality) != num_constraints:
            raise ValueError(f"equality marks {len(equality)} values of {num_constraints}")
        refused = self.constrained and not self.takes_equalities
        if equality is not None and any(equality) and refused:
            raise ValueError(f"{self.name} takes inequality constraints only")
        marks = [False] * num_constraints if equality is None else [bool(e) for e in equality]
        self.equality = torch.tensor(marks, dtype=torch.bool, device=self.params[0].device)
        """``[m]``: which values are equalities h_i(x) = 0 (all false: inequalities only)."""
        self.has_equalities = any(marks)
        """Whether any is, a host bool, so that ``step`` can skip the equality terms unread."""
        if seeds is not None and not self.batchable:
            raise ValueError(f"{self.name} cannot train packed seeds; train one seed at a time")
        if seeds is not None and any(p.shape[:1] != (seeds,) for p in self.params):
            raise ValueError(f"packed parameters must have a leading dimension of {seeds} seeds")
        self.num_constraints = num_constraints
        self.seeds = seeds
        self.hp, self._member_values = self._member_hyperparameters(hp)
        self.iteration = 0
        self._init_state()

    def _member_hyperparameters(self, hp: HP | Sequence[HP]) -> tuple[HP, dict[str, torch.Tensor]]:
        """``self.hp`` and the ``[K]`` tensors of the values the members disagree on: one
        model as it is; members that agree as the first one (a seeds-only pack steps exactly
        as before); members that differ behind ``MemberHyperparameters``."""
        if isinstance(hp, Hyperparameters):
            return hp, {}
        members = list(hp)
        if len(members) != (self.seeds or 1):
            raise ValueError(f"{len(members)} hyperparameter sets for {self.seeds or 1} members")
        differing = differing_fields(members)
        if not differing:
            return members[0], {}
        unread = sorted(differing - self.member_hyperparameters)
        if unread:
            raise ValueError(
                f"{self.name} reads {', '.join(unread)} once for the whole pack; members must "
                "share it"
            )
        view = MemberHyperparameters(members, differing)
        values = {
            name: member_tensor(view.values(name), self.device, self.dtype) for name in differing
        }
        return cast(HP, view), values

    def hyper(self, name: str, like: torch.Tensor | None = None) -> float | torch.Tensor:
        """Hyperparameter ``name`` as the step uses it: the Python value when every member
        shares it, else the members' ``[K]`` tensor, shaped to broadcast against ``like``
        (a stacked parameter, ``[K, m]`` duals) when given."""
        values = self._member_values.get(name)
        if values is None:
            return getattr(self.hp, name)
        return values if like is None else self._per_seed(values, like)

    def hyperparameters_as_tensors(self) -> None:
        """From now on :meth:`hyper` gives each shared float of ``member_hyperparameters`` as
        a 0-dim tensor on the device, as it gives a pack's differing ones. For compiled steps
        (``trial/compiled.py``): a tensor is a graph input where a number is a constant, so
        trials that differ only in these values share one graph. The same arithmetic, up to
        rounding."""
        for name in sorted(self.member_hyperparameters - self._member_values.keys()):
            value = getattr(self.hp, name, None)
            if isinstance(value, float):
                self._member_values[name] = torch.tensor(
                    value, device=self.device, dtype=self.dtype
                )

    def _init_state(self) -> None:
        """Create the attributes named in ``state_attributes`` (and whatever else the step
        needs) from ``self.hp``; called once, at the end of ``__init__``, when parameters,
        device, dtype and ``batch_shape`` are known."""

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """``(K,)`` for ``K`` packed seeds, ``()`` for one model: the leading shape of state."""
        return () if self.seeds is None else (self.seeds,)

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    def _multiplier(
        self, init: float = 0.0, lower: float = 0.0, upper: float | None = None
    ) -> Multiplier:
        """Multipliers of the ``m`` constraints in ``[lower, upper]``, one row per seed
        (``(*batch_shape, m)``), on the parameters' device and dtype; those of equalities in
        ``[-upper, upper]`` (free, without a bound). A constraint's own ``dual_bound``
        replaces ``upper`` for its values."""
        return Multiplier(
            (*self.batch_shape, self.num_constraints),
            device=self.device,
            dtype=self.dtype,
            init=init,
            lower=lower,
            upper=upper if upper is None else self._per_value("dual_bound", upper),
            equality=self.equality if self.has_equalities else None,
        )

    def _per_value(self, name: str, default: float | torch.Tensor) -> float | torch.Tensor:
        """``default`` (a hyperparameter: a number, or per member), replaced by the values'
        own ``name`` where their constraint sets one (``dual_overrides``): as it was when
        none does, else ``[m]`` (``[K, m]`` per member)."""
        override = self._overrides.get(name)
        if override is None:
            return default
        mask, values = override
        return torch.where(mask, values, default)

    def _zeros(self, *size: int) -> torch.Tensor:
        """Per-seed state of shape ``(*batch_shape, *size)`` (controller memories, sums)."""
        return torch.zeros((*self.batch_shape, *size), device=self.device, dtype=self.dtype)

    def _scalar(self, value: float) -> torch.Tensor:
        """``value`` once per seed (``batch_shape``), filled by a kernel rather than copied.

        ``torch.tensor(value, device=cuda)`` copies from pageable host memory, which waits
        for the stream; ``torch.full`` only enqueues a fill.
        """
        return torch.full(self.batch_shape, value, device=self.device, dtype=self.dtype)

    @staticmethod
    def _per_seed(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
        """A per-seed ``value`` (``[K]``) shaped to broadcast against a stacked ``like``."""
        if isinstance(value, torch.Tensor) and value.ndim:
            return value.reshape(-1, *([1] * (like.ndim - 1)))
        return value

    def _seed_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` within each seed: over all but the leading seed dimension."""
        return tensor.sum() if self.seeds is None else tensor.reshape(self.seeds, -1).sum(1)

    @abstractmethod
    def step(self, estimate: Estimate) -> StepInfo:
        """One iteration; returns detached tensors worth logging (at least ``loss``)."""

    def multipliers(self) -> torch.Tensor:
        """A copy of the current dual variables, ``[m]`` or ``[K, m]`` for packed seeds: the
        :class:`Multiplier` values among ``state_attributes``, concatenated along the last
        dimension (``m = 0`` for methods without them)."""
        duals = [
            dual.value
            for name in self.state_attributes
            if isinstance(dual := getattr(self, name), Multiplier)
        ]
        return torch.cat(duals, -1) if duals else self._zeros(0)

    def state_dict(self) -> dict[str, Any]:
        """``iteration`` and every attribute in ``state_attributes``, by name: tensors copied,
        objects as their own ``state_dict`` (a torch optimiser's shares its buffers, as in
        torch), a generator as its state."""
        names = ("iteration", *self.state_attributes)
        return {name: _saved(getattr(self, name)) for name in names}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``: each attribute takes the saved value, on its current
        device and dtype."""
        for name in ("iteration", *self.state_attributes):
            if name not in state and name in self.late_state_attributes:
                continue  # a checkpoint from before it existed: the fresh value is its old one
            setattr(self, name, _restored(getattr(self, name), state[name]))

    def _log(self, sample: Sample, duals: Multiplier | None = None, **extra: LogEntry) -> StepInfo:
        """``info`` for this method's step: equalities' violations read ``|h|``."""
        equality = self.equality if self.has_equalities else None
        return info(sample, duals, equality=equality, **extra)

    def output_iterate(self) -> AbstractContextManager[None]:
        """The method's output in the parameters for the body of a ``with`` (what evaluation
        reads), the current iterate restored bitwise after it. The last iterate here, so a
        no-op; a method whose guarantee is for another iterate (a random or averaged one)
        swaps that one in."""
        return nullcontext()

    def _backward(self, target: torch.Tensor) -> None:
        """Fresh gradients of ``target`` (one value per seed) in every parameter's ``.grad``.

        Packed seeds' targets are summed: each seed's slice of the gradient is its own.
        """
        for p in self.params:
            p.grad = None
        total = target if self.seeds is None else target.sum()
        if not self.gradients_by_grad:
            total.backward()
            return
        grads = torch.autograd.grad(total, self.params, allow_unused=True)
        for p, grad in zip(self.params, grads, strict=True):
            # A fresh tensor (``+ 0`` is exact): a traced step that updated autograd.grad's
            # own output in place (SSL-ALM's smoothing term) lost that update in torch 2.13.
            p.grad = None if grad is None else grad + 0

    def _descend(self, step_size: float | torch.Tensor) -> None:
        """``x ← x − step_size · grad`` for every parameter; a tensor step (0-dim, or one per
        seed) stays on the device."""
        params = [p for p in self.params if p.grad is not None]
        with torch.no_grad():
            if isinstance(step_size, torch.Tensor) and step_size.ndim:
                for p in params:  # one step per packed seed; in place, no K-model temporary
                    p.addcmul_(self._per_seed(step_size, p), p.grad, value=-1)
            else:
                # Multi-tensor kernels: two operations for all parameters rather than two per
                # parameter (the same arithmetic, so the same result bit for bit).
                products = torch._foreach_mul([p.grad for p in params], step_size)
                torch._foreach_sub_(params, products)


def _per_value_overrides(
    given: dict[str, Sequence[float | None] | None], num_constraints: int, like: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The per-value settings that some value sets: its mask and values (0 where unset), on
    ``like``'s device and dtype, made once rather than at each step."""
    overrides = {}
    for name, values in given.items():
        if values is None or all(value is None for value in values):
            continue
        if len(values) != num_constraints:
            raise ValueError(f"{name} given for {len(values)} values of {num_constraints}")
        mask = torch.tensor([value is not None for value in values]).to(like.device)
        numbers = [0.0 if value is None else value for value in values]
        overrides[name] = (mask, torch.tensor(numbers, dtype=like.dtype).to(like.device))
    return overrides


def _saved(value: Any) -> Any:
    """A copy of one piece of state (see ``Algorithm.state_attributes``)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return [_saved(item) for item in value]
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, int | float):
        return value
    return value.state_dict()


def _restored(current: Any, saved: Any) -> Any:
    """``current`` holding ``saved``: a tensor on ``current``'s device and dtype, a stateful
    object loaded in place."""
    if isinstance(current, torch.Tensor):
        return torch.as_tensor(saved, device=current.device, dtype=current.dtype).clone()
    if isinstance(current, list):
        return [_restored(item, s) for item, s in zip(current, saved, strict=True)]
    if isinstance(current, torch.Generator):
        current.set_state(saved)
        return current
    if isinstance(current, int | float):
        return type(current)(saved)
    current.load_state_dict(saved)
    return current


def scaled(factor: float | torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``factor · tensor``, with no operation for a factor of exactly 1 (a default such as
    ALM's ρ), whose product would be ``tensor`` bit for bit: a step of a small model is mostly
    per-operation dispatch."""
    if isinstance(factor, float | int) and factor == 1:
        return tensor
    return factor * tensor


def max_violation(c: torch.Tensor, equality: torch.Tensor | None = None) -> torch.Tensor:
    """``max(0, max_i c_i)`` per seed, detached: the worst constraint's excess (an undefined
    value reads 0, so it adds none); an equality's (``equality``, the ``[m]`` mask) is
    ``|h_i|``, as evaluation judges it."""
    c = c.detach()
    if equality is not None:
        c = torch.where(equality, c.abs(), c)
    return largest(c.clamp_min(0))


def largest(values: torch.Tensor) -> torch.Tensor:
    """The largest entry over the last dimension, detached (0 when it is empty, e.g. no
    duals): 0-dim for a vector, ``[K]`` for packed seeds' ``[K, m]``."""
    values = values.detach()
    return values.amax(-1) if values.shape[-1] else values.new_zeros(values.shape[:-1])


def info(
    sample: Sample,
    duals: Multiplier | None = None,
    *,
    equality: torch.Tensor | None = None,
    **extra: LogEntry,
) -> StepInfo:
    """The step's log: detached loss and worst violation (of the decision values; ``|h|`` for
    the ``equality`` values), the largest multiplier when the algorithm has ``duals``, then
    algorithm-specific entries (tensors, or callables over tensors of this step). Lazy
    (``StepLog``) in an eager step; a traced step computes it whole, as part of its graph."""
    dual_values = None if duals is None else duals.value
    log = StepLog(sample.loss, sample.decision, dual_values, extra, equality)
    return log.computed() if torch.compiler.is_compiling() else log

"""The linear part ``W`` of an equilibrium ``z = σ(Wz + y)``, as objects the solvers can use.

Two levels:

* :class:`TrainableOperator` is an ``nn.Module`` holding the trainable parameters. Its parameterization
  proves a :class:`~mondeq.operators.guarantees.Guarantee` for every parameter value: ℓ2 strong monotonicity
  (:class:`MonotoneOperator`, SPEC 1.2) or a weighted ℓ∞ contraction (NEMON, SPEC 4.4), so the equilibrium
  is unique and the solvers that accept that guarantee converge.
* :class:`FrozenOperator` is ``W`` at one parameter value, detached from autograd: it applies ``W`` and
  ``Wᵀ``, gives the resolvent ``(I + α(I − W))⁻¹`` where it has one (built once per ``α`` and then reused)
  and carries its guarantee. :meth:`TrainableOperator.frozen` caches it until the parameters change, so a
  forward solve, its backward solve and every later evaluation share one factorisation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import InputError
from .guarantees import Guarantee, L1Contractive, StronglyMonotone


class Resolvent(ABC):
    """``R_α = (I + α(I − W))⁻¹`` of a frozen operator, with its transpose."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    @abstractmethod
    def apply(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        """``add + R_α v`` (``add`` omitted: ``R_α v``)."""

    @abstractmethod
    def apply_T(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        """``add + R_αᵀ v``; ``R_αᵀ`` is the resolvent of ``Wᵀ``."""

    @property
    def T(self) -> Resolvent:
        return _TransposedResolvent(self)


class _TransposedResolvent(Resolvent):
    def __init__(self, parent: Resolvent) -> None:
        super().__init__(parent.alpha)
        self._parent = parent

    def apply(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return self._parent.apply_T(v, add)

    def apply_T(self, v: Tensor, add: Tensor | None = None) -> Tensor:
        return self._parent.apply(v, add)

    @property
    def T(self) -> Resolvent:
        return self._parent


class FrozenOperator(ABC):
    """``W`` at fixed parameter values: matrix-free products, resolvents and what is proved about it.

    Attributes:
        guarantee: what is proved about ``W`` (:mod:`mondeq.operators.guarantees`); solvers check it.
        shape: the shape of one sample of ``z`` (without the batch dimension).
        dtype, device: those of the tensors it applies to.
    """

    def __init__(self, guarantee: Guarantee, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.guarantee = guarantee
        self.shape = tuple(shape)
        self.dtype, self.device = dtype, device
        self._resolvents: dict[float, Resolvent] = {}
        self._norm_estimate: float | None = None

    @abstractmethod
    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        """``add + W z`` for a batch ``z`` of shape ``(batch, *shape)``."""

    @abstractmethod
    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        """``add + Wᵀ z``."""

    def _build_resolvent(self, alpha: float) -> Resolvent:
        raise InputError(f"{type(self).__name__} has no resolvent")

    def resolvent(self, alpha: float) -> Resolvent:
        """``(I + α(I − W))⁻¹``, factorised on first use and cached for this ``α``."""
        alpha = float(alpha)
        if not alpha > 0.0:
            raise InputError(f"a resolvent needs alpha > 0, got {alpha}")
        res = self._resolvents.get(alpha)
        if res is None:
            res = self._resolvents[alpha] = self._build_resolvent(alpha)
        return res

    def _monotone(self) -> StronglyMonotone:
        if not isinstance(self.guarantee, StronglyMonotone):
            raise InputError(f"{type(self).__name__} is {self.guarantee.describe()}, not ℓ2 strongly monotone")
        return self.guarantee

    @property
    def m(self) -> float:
        """The strong monotonicity of ``I − W`` (ℓ2 operators only)."""
        return self._monotone().m

    @property
    def lipschitz(self) -> float:
        """``L ≥ ‖I − W‖₂``, computed once (ℓ2 operators only)."""
        return self._monotone().lipschitz

    def norm_estimate(self, iterations: int = 20) -> float:
        """``‖I − W‖₂`` from below: power iteration on ``(I − W)ᵀ(I − W)`` from a fixed start, one sample's
        products each (computed once). For step sizes, where any value near the norm serves; error bounds and
        certificates use :attr:`lipschitz`, an upper bound."""
        if self._norm_estimate is None:
            gen = torch.Generator().manual_seed(0)
            v = torch.randn((1, *self.shape), generator=gen).to(self.device, self.dtype)
            for _ in range(iterations):
                v = v / v.norm()
                u = v - self.W(v)  # (I − W)v
                v = u - self.WT(u)  # (I − W)ᵀ(I − W)v
            v = v / v.norm()
            self._norm_estimate = float((v - self.W(v)).norm())
        return self._norm_estimate

    def transpose(self) -> FrozenOperator:
        """The operator ``Wᵀ`` with the dual guarantee, sharing this one's factorisations."""
        return _TransposedOperator(self)

    def right_scaled(self, d: Tensor) -> FrozenOperator:
        """The operator ``z ↦ W(d ⊙ z)`` for ``d`` of a batch's shape with entries in ``[0, 1]``
        (:class:`L1Contractive` operators only: the implicit backward of a NEMON, SPEC 4.4)."""
        if not isinstance(self.guarantee, L1Contractive):
            raise InputError(f"right_scaled needs an ℓ1-contractive operator, got {self.guarantee.describe()}")
        return _RightScaled(self, d, self.guarantee.right_scaled())


class _TransposedOperator(FrozenOperator):
    def __init__(self, parent: FrozenOperator) -> None:
        super().__init__(parent.guarantee.dual(), parent.shape, parent.dtype, parent.device)
        self._parent = parent

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return self._parent.WT(z, add)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return self._parent.W(z, add)

    def resolvent(self, alpha: float) -> Resolvent:
        return self._parent.resolvent(alpha).T

    def norm_estimate(self, iterations: int = 20) -> float:
        return self._parent.norm_estimate(iterations)  # ‖I − Wᵀ‖₂ = ‖I − W‖₂

    def _build_resolvent(self, alpha: float) -> Resolvent:  # pragma: no cover - resolvent() delegates
        return self._parent.resolvent(alpha).T

    def transpose(self) -> FrozenOperator:
        return self._parent


class _RightScaled(FrozenOperator):
    """``W D`` for a per-sample diagonal ``D``; no resolvent (no solver that needs one accepts it)."""

    def __init__(self, parent: FrozenOperator, d: Tensor, guarantee: Guarantee) -> None:
        super().__init__(guarantee, parent.shape, parent.dtype, parent.device)
        self._parent, self._d = parent, d

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        return self._parent.W(self._d * z, add)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        out = self._d * self._parent.WT(z)
        return out if add is None else out.add_(add)


class TrainableOperator(nn.Module, ABC):
    """A trainable ``W`` whose parameterization proves a :class:`Guarantee` for every parameter value.

    Subclasses name the tensors ``W`` depends on (:meth:`tensors`), apply ``W`` differentiably as a pure
    function of them (:meth:`apply_W`, used for parameter gradients) and build a :class:`FrozenOperator`
    from them (:meth:`build`). Passing the tensors explicitly keeps the implicit backward exact under
    ``torch.func.functional_call`` and lets autograd detect parameters modified between forward and backward.
    """

    guarantee_type: ClassVar[type[Guarantee]]
    """The kind of guarantee every :meth:`frozen` value carries (it picks the family's default solver)."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: tuple[tuple[float, ...], list[int], list[Tensor], FrozenOperator] | None = None

    def hyperparameters(self) -> tuple[float, ...]:
        """The non-tensor values ``W`` depends on (a rebuilt :meth:`frozen` when they change)."""
        return ()

    @abstractmethod
    def tensors(self) -> tuple[Tensor, ...]:
        """The tensors ``W`` is a function of (its parameters, by attribute access)."""

    @abstractmethod
    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        """``W z`` as a differentiable function of ``tensors`` and ``z``."""

    def vjp(
        self, tensors: Sequence[Tensor], z: Tensor, u: Tensor, need: Sequence[bool]
    ) -> list[Tensor | None]:
        """``∂⟨u, W z⟩/∂tensors`` (``None`` where ``need`` is false): the parameter part of the implicit
        gradient. By autograd through :meth:`apply_W`; operators may override it with a closed form."""
        grads: list[Tensor | None] = [None] * len(tensors)
        wanted = [i for i, n in enumerate(need) if n]
        if wanted:
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(n) for t, n in zip(tensors, need, strict=True)]
                out = self.apply_W(leaves, z)
                found = torch.autograd.grad(out, [leaves[i] for i in wanted], u)
                for i, g in zip(wanted, found, strict=True):
                    grads[i] = g
        return grads

    @abstractmethod
    def build(self, tensors: Sequence[Tensor]) -> FrozenOperator:
        """A :class:`FrozenOperator` at the values of ``tensors`` (detached)."""

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample of ``z``."""

    def forward(self, z: Tensor) -> Tensor:
        """``W z`` with the current parameters (differentiable)."""
        return self.apply_W(self.tensors(), z)

    def frozen(self, tensors: Sequence[Tensor] | None = None) -> FrozenOperator:
        """The :class:`FrozenOperator` at the current parameter values, rebuilt only when they change.

        The cache compares values (and :meth:`hyperparameters`), so it is also correct after writes that
        bypass autograd's version tracking (``param.data[...] = ...``); a tensor whose version counter moved
        (an optimiser step) is taken as changed without the comparison and its device synchronisation.

        Raises:
            InputError: the parameters hold NaN or Inf.
        """
        tensors = tuple(self.tensors() if tensors is None else tensors)
        versions = [t._version for t in tensors]
        cached = self._cache
        key = self.hyperparameters()
        if cached is not None and cached[0] == key and cached[1] == versions and _same_values(cached[2], tensors):
            return cached[3]
        with torch.no_grad():
            detached = [t.detach() for t in tensors]
            if not _all(torch.isfinite(t).all() for t in detached):
                raise InputError(f"{type(self).__name__}: the parameters hold NaN or Inf values")
            op = self.build(detached)
            self._cache = (key, versions, [t.clone() for t in detached], op)
        return op

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_cache"] = None
        return state


class MonotoneOperator(TrainableOperator):
    """A trainable ``W`` whose parameterization keeps ``I − W`` ``m``-strongly monotone (SPEC 1.2)."""

    guarantee_type = StronglyMonotone

    def __init__(self, m: float) -> None:
        super().__init__()
        if not m > 0:
            raise InputError(f"the strong monotonicity m must be > 0, got {m}")
        self.m = float(m)

    def hyperparameters(self) -> tuple[float, ...]:
        return (self.m,)


def _same_values(old: Sequence[Tensor], new: Sequence[Tensor]) -> bool:
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return False
    return _all(torch.eq(a, b.detach()).all() for a, b in zip(old, new, strict=True))


def _all(flags: Iterable[Tensor]) -> bool:
    """Whether every one of the boolean scalars is true, read with one device synchronisation."""
    flags = list(flags)
    return not flags or bool(torch.stack(flags).all())

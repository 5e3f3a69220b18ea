"""Interval bounds of NEMON equilibria and logits by the mixed-monotone embedding (SPEC 5; Jafarpour, Davydov
& Bullo 2022, "Robustness certificates for implicit neural networks: a mixed monotone contractive approach").

**The embedding.** Split ``W = P + N``: ``P`` holds the diagonal (of either sign) and the positive off-diagonal
entries, ``N`` the negative off-diagonal ones. The embedded equilibrium

    z̲ = σ(P z̲ + N z̄ + y̲),   z̄ = σ(P z̄ + N z̲ + ȳ)

is that of ``W_e = [[P, N], [N, P]]`` on twice the state. ``P`` and ``N`` share out ``W``'s off-diagonal
entries, so every row of ``Δ_e W_e Δ_e⁻¹`` (``Δ_e = diag(Δ, Δ)``) has the measure of ``W``'s row and the same
diagonal: ``W_e`` is a NEMON operator with ``W``'s guarantee, solved (average iteration) and differentiated
(implicit backward) like one. That is the certified-training bound. The solves apply ``W_e`` through the box's
centre ``c = (z̲ + z̄)/2`` and half-width ``r = (z̄ − z̲)/2``: ``W_e(z̲, z̄) = (Wc − Ar, Wc + Ar)`` with
``A = P − N`` (``W``'s diagonal, ``|W|`` off it), two products of ``W``'s size instead of one with twice its
rows and columns (half the multiply–adds; ``Aᵀ`` likewise for ``W_eᵀ``).

**Enclosure, whatever the tolerance.** With ``α ≤ α*`` the map ``t(zᵢ, r) = (1 − α)zᵢ + ασ(Wᵢᵢzᵢ + r)`` is
non-decreasing in ``zᵢ`` (its slope is at least ``1 − α(1 − min(Wᵢᵢ, 0)) ≥ 0`` for ``σ`` slope-restricted in
``[0, 1]``) and in ``r``. Hence for every ``y ∈ [y̲, ȳ]`` and ``z ∈ [z̲, z̄]`` the average step
``T_y(z) = (1 − α)z + ασ(Wz + y)`` lies in the box ``G(z̲, z̄)`` of the embedded average step. If a box holds
every equilibrium ``z*(y)``, so does its intersection with ``G(box)`` (as ``z* = T_y(z*)``). The first box
comes from the error bound at ``z = 0``: ``‖Δz*‖∞ ≤ ‖Δσ(y)‖∞ / (1 − μ⁺)`` with ``|σ(y)| ≤ max(|σ(y̲)|, |σ(ȳ)|)``.
Every iterate is therefore an enclosure, and ``G`` contracts in the weighted ℓ∞ norm by ``1 − α(1 − μ⁺)``, so
the boxes shrink to the embedded equilibrium. In floating point each step is widened by a bound of its
rounding (``γₖ = k·u`` per dot product of ``k`` terms, with a few roundings to spare).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import Activation
from ..errors import InputError
from ..implicit import SolveRecord, equilibrium
from ..operators.base import FrozenOperator, TrainableOperator
from ..operators.dense import DenseFrozenOperator
from ..operators.guarantees import LinfContractive
from ..operators.nemon import ConvNemon, ConvNemonFrozenOperator, DenseNemon, conv_guarantee, dense_guarantee

if TYPE_CHECKING:
    from ..layers import EquilibriumLayer


def _split_dense(w: Tensor) -> Tensor:
    """``[[P, N], [N, P]]`` of a dense ``W`` (differentiable)."""
    d = torch.diag(w.diagonal())
    off = w - d
    p, n = off.clamp(min=0.0) + d, off.clamp(max=0.0)
    return torch.cat([torch.cat([p, n], 1), torch.cat([n, p], 1)], 0)


def _centre_mask(kernel: Tensor) -> Tensor:
    """``True`` at the centre tap of ``K[o, o]``: a NEMON convolution's diagonal."""
    c, k = kernel.shape[0], kernel.shape[-1]
    mask = torch.zeros_like(kernel, dtype=torch.bool)
    idx = torch.arange(c, device=kernel.device)
    mask[idx, idx, k // 2, k // 2] = True
    return mask


def _split_kernel(kernel: Tensor) -> Tensor:
    """The embedded kernel of a NEMON convolution: the centre tap of ``K[o, o]`` (the diagonal) stays in ``P``
    whatever its sign."""
    mask = _centre_mask(kernel)
    p = torch.where(mask, kernel, kernel.clamp(min=0.0))
    n = torch.where(mask, torch.zeros_like(kernel), kernel.clamp(max=0.0))
    return torch.cat([torch.cat([p, n], 1), torch.cat([n, p], 1)], 0)


def _spread(w: Tensor, diagonal: Tensor) -> Tensor:
    """``A = P − N``: ``w`` where ``diagonal`` holds, ``|w|`` elsewhere (differentiable)."""
    return torch.where(diagonal, w, w.abs())


def _dense_spread(w: Tensor) -> Tensor:
    """``A = P − N`` of a dense ``W``."""
    return _spread(w, torch.eye(w.shape[0], dtype=torch.bool, device=w.device))


def _by_centre(z: Tensor, apply_w: Callable[[Tensor], Tensor], apply_a: Callable[[Tensor], Tensor]) -> Tensor:
    """``(Wc − Ar, Wc + Ar)`` for the stacked ``z = (z̲, z̄)``: ``W_e z`` (``W_eᵀ z`` from ``Wᵀ`` and ``Aᵀ``)."""
    lo, hi = z.chunk(2, dim=1)
    mid, spread = apply_w((hi + lo) * 0.5), apply_a((hi - lo) * 0.5)
    return torch.cat([mid - spread, mid + spread], 1)


def _conv_W(kernel: Tensor, shift: Tensor, weights: Tensor, z: Tensor) -> Tensor:
    u = z * weights
    return (F.conv2d(u, kernel, padding=kernel.shape[-1] // 2) + shift.view(-1, 1, 1) * u) / weights


class _EmbeddedFrozenOperator(FrozenOperator):
    """The frozen ``W_e`` of a NEMON operator, applied by :func:`_by_centre` from frozen ``W`` and ``A`` (which
    has ``W``'s diagonal and row measures, so both carry ``W``'s guarantee); ``guarantee`` is ``W_e``'s."""

    def __init__(self, w: FrozenOperator, a: FrozenOperator, guarantee: LinfContractive) -> None:
        first, *rest = w.shape
        super().__init__(guarantee, (2 * first, *rest), w.dtype, w.device)
        self.w, self.a = w, a

    def W(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        out = _by_centre(z, self.w.W, self.a.W)
        return out if add is None else out.add_(add)

    def WT(self, z: Tensor, add: Tensor | None = None) -> Tensor:
        out = _by_centre(z, self.w.WT, self.a.WT)
        return out if add is None else out.add_(add)


class MixedMonotoneEmbedding(TrainableOperator):
    """The embedded operator ``W_e`` of a NEMON operator (see the module docstring), on ``(z̲, z̄)`` stacked
    along the first non-batch dimension. Its parameters are the NEMON's; it holds no copy of them.

    Args:
        base: a :class:`~mondeq.operators.DenseNemon` or :class:`~mondeq.operators.ConvNemon`.
    """

    guarantee_type = LinfContractive

    def __init__(self, base: TrainableOperator) -> None:
        super().__init__()
        if not isinstance(base, (DenseNemon, ConvNemon)):
            raise InputError(f"interval bounds need a NEMON operator (an ℓ∞ contraction), got {type(base).__name__}")
        self.base = base

    @property
    def shape(self) -> tuple[int, ...]:
        first, *rest = self.base.shape
        return (2 * first, *rest)

    def hyperparameters(self) -> tuple[float, ...]:
        return self.base.hyperparameters()

    def tensors(self) -> tuple[Tensor, ...]:
        return self.base.tensors()

    def _conv_parts(self, tensors: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(K, A's kernel, shift, Δ)`` of a NEMON convolution."""
        kernel, delta = tensors
        shift = self.base.gamma - kernel.abs().sum(dim=(1, 2, 3))
        return kernel, _spread(kernel, _centre_mask(kernel)), shift, torch.exp(delta).view(-1, 1, 1)

    def apply_W(self, tensors: Sequence[Tensor], z: Tensor) -> Tensor:
        if isinstance(self.base, DenseNemon):
            w = self.base.weight(tensors)
            a = _dense_spread(w)
            return _by_centre(z, lambda c: c @ w.T, lambda r: r @ a.T)
        kernel, spread, shift, weights = self._conv_parts(tensors)
        return _by_centre(z, lambda c: _conv_W(kernel, shift, weights, c), lambda r: _conv_W(spread, shift, weights, r))

    def build(self, tensors: Sequence[Tensor]) -> FrozenOperator:
        if isinstance(self.base, DenseNemon):
            w = self.base.weight(tensors)
            g = dense_guarantee(w, torch.exp(tensors[1]))
            a = _dense_spread(w)
            parts: tuple[FrozenOperator, FrozenOperator] = (DenseFrozenOperator(w, guarantee=g),
                                                            DenseFrozenOperator(a, guarantee=g))
        else:
            kernel, spread, shift, weights = self._conv_parts(tensors)
            g = conv_guarantee(kernel, shift, weights)
            shape = self.base.shape
            parts = (ConvNemonFrozenOperator(kernel, weights, shift, shape, g),
                     ConvNemonFrozenOperator(spread, weights, shift, shape, g))
        return _EmbeddedFrozenOperator(*parts, dataclasses.replace(g, weights=_stacked(g.weights)))


def _stacked(weights: Tensor) -> Tensor:
    """The weights ``Δ_e = diag(Δ, Δ)`` of ``W_e``, from ``W``'s (one per row, or ``(c, 1, 1)``)."""
    return weights.repeat(2, *[1] * (weights.dim() - 1))


class Embedding(NamedTuple):
    """A frozen embedded operator ``W_e`` (with its ℓ∞ guarantee), ``|W_e|`` and the number of terms of a row:
    what :func:`enclose` iterates and its rounding bound."""

    op: FrozenOperator
    absolute: FrozenOperator
    terms: int


def _dense_embedding(op: DenseFrozenOperator) -> Embedding:
    return Embedding(op, DenseFrozenOperator(op.weight.abs(), guarantee=op.guarantee), op.weight.shape[1])


def embed(operator: TrainableOperator) -> Embedding:
    """The frozen embedding of a NEMON operator at its current parameters, applied as the stacked ``W_e`` (the
    rounding bound of :func:`enclose` is that of its plain dot products)."""
    emb = MixedMonotoneEmbedding(operator).frozen()
    assert isinstance(emb, _EmbeddedFrozenOperator)
    g, w = emb.guarantee, emb.w
    if isinstance(w, DenseFrozenOperator):
        return _dense_embedding(DenseFrozenOperator(_split_dense(w.weight), guarantee=g))
    assert isinstance(w, ConvNemonFrozenOperator)
    scale, shift = _stacked(w.scale), w.shift.flatten().repeat(2)
    op = ConvNemonFrozenOperator(_split_kernel(w.kernel), scale, shift, emb.shape, g)
    absolute = ConvNemonFrozenOperator(op.kernel.abs(), scale, shift.abs(), emb.shape, g)
    return Embedding(op, absolute, op.kernel[0].numel() + 1)


def perron_weights(w: Tensor) -> tuple[float, Tensor]:
    """The smallest weighted ℓ∞ measure of a dense ``W`` over diagonal weights, and weights ``Δ`` that reach it:
    ``minΔ μ∞,Δ(W)`` is the Perron root ``λ`` of the Metzler majorant ``M`` (``Mᵢᵢ = Wᵢᵢ``, ``Mᵢⱼ = |Wᵢⱼ|``), and
    ``Δ = diag(1/v)`` for its Perron vector ``Mv = λv`` gives every row the measure ``λ``."""
    w64 = w.detach().double().cpu()  # a small dense eigenproblem
    majorant = w64.abs() + torch.diag(w64.diagonal() - w64.diagonal().abs())
    values, vectors = torch.linalg.eig(majorant)
    k = int(values.real.argmax())
    v = vectors[:, k].real
    v = v * v.sum().sign()
    v = v.clamp_min(1e-12 * float(v.abs().max()))
    return float(values[k].real), (v.max() / v).to(w.device, w.dtype)


def embed_dense(w: Tensor) -> Embedding:
    """The embedding of any dense ``W`` whose weighted ℓ∞ measure is below 1 for the weights of
    :func:`perron_weights` (the guarantee is measured from the stored embedded matrix).

    Raises:
        InputError: ``minΔ μ∞,Δ(W) ≥ 1`` (no interval bound of this kind exists), or below 1 by less than the
            rounding of the stored matrix's measure.
    """
    root, weights = perron_weights(w)
    if not root < 1:
        raise InputError(f"no interval bound: minΔ μ∞,Δ(W) = {root:.4g} ≥ 1 (the mixed-monotone embedding needs "
                         "it below 1)")
    e = _split_dense(w)
    try:
        guarantee = dense_guarantee(e, weights.repeat(2))
    except InputError:
        raise InputError(f"no interval bound: minΔ μ∞,Δ(W) = {root:.6g} is below 1 by less than its "
                         "rounding") from None
    return _dense_embedding(DenseFrozenOperator(e, guarantee=guarantee))


def _halves(z: Tensor) -> tuple[Tensor, Tensor]:
    lo, hi = z.chunk(2, dim=1)
    return lo, hi


def linear_box(
    apply: Callable[[Tensor], Tensor], apply_abs: Callable[[Tensor], Tensor], terms: int, lo: Tensor, hi: Tensor
) -> tuple[Tensor, Tensor]:
    """The box of ``apply(x)`` (affine) over ``x ∈ [lo, hi]``: ``apply(c) ± |A|r`` with ``c``, ``r`` the box's
    centre and half-width, widened by the rounding of ``terms``-term dot products (``apply_abs``: ``x ↦ |A|x``)."""
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    mid, spread = apply(centre), apply_abs(radius)
    eps = torch.finfo(mid.dtype).eps
    slack = (terms + 6) * eps * (apply_abs(centre.abs() + radius) + mid.abs())
    return mid - spread - slack, mid + spread + slack


@torch.no_grad()
def enclose(
    embedding: Embedding | TrainableOperator, act: Activation, y_lo: Tensor, y_hi: Tensor, tol: float = 1e-10,
    max_iter: int = 20000,
) -> tuple[Tensor, Tensor, int]:
    """A box ``[z̲, z̄]`` holding the equilibrium of every ``y ∈ [y_lo, y_hi]`` of an operator with an embedding
    (a NEMON operator, or the :class:`Embedding` of :func:`embed` or :func:`embed_dense`; see the module
    docstring; compute in float64 for a tight rounding bound), and the iterations it took. It stops when no box
    moves by more than ``tol`` in ``‖Δ·‖∞`` relative to its size; every iterate is an enclosure."""
    op, absolute, terms = embedding if isinstance(embedding, Embedding) else embed(embedding)
    g = op.guarantee
    assert isinstance(g, LinfContractive)
    alpha = g.alpha_max
    weights = g.weights.to(y_lo.dtype)
    w_full = weights.expand(op.shape)[None]
    w_half = _halves(w_full)[0]
    u = torch.finfo(y_lo.dtype).eps / 2
    widen = 2 * (terms + 8) * u
    reach = torch.maximum(act(y_lo).abs(), act(y_hi).abs())
    bound = (reach * w_half).flatten(1).amax(1) / (1.0 - g.mu_plus) * (1 + widen)
    box = (bound.view(-1, *[1] * (y_lo.dim() - 1)) / w_half).expand_as(y_lo)
    state = torch.cat([-box, box], 1)  # (z̲, z̄) stacked, as the embedded operator takes them
    sign = torch.cat([-torch.ones_like(w_half), torch.ones_like(w_half)], 1)  # outward: down, then up
    down = sign < 0
    y = torch.cat([y_lo, y_hi], 1)
    y_abs = y.abs()
    for it in range(1, max_iter + 1):
        pre = op.W(state, add=y) + sign * (widen * absolute.W(state.abs(), add=y_abs))
        a = act(pre)
        a = a + sign * (2 * u * a.abs())
        new = (1 - alpha) * state + alpha * a + sign * (4 * u * (state.abs() + a.abs()))
        new = torch.where(down, torch.maximum(state, new), torch.minimum(state, new))
        moved = ((new - state).abs() * w_full).flatten(1).amax(1)
        size = (new.abs() * w_full).flatten(1).amax(1)
        state = new
        if bool((moved <= tol * (1 + size)).all()):
            return (*_halves(state), it)
    return (*_halves(state), max_iter)


def interval_equilibrium(
    layer: EquilibriumLayer, y_lo: Tensor, y_hi: Tensor
) -> tuple[Tensor, Tensor]:
    """``(z̲, z̄)``, the embedded equilibrium of an equilibrium layer over ``y ∈ [y_lo, y_hi]``, differentiable
    (the layer's solver and backward on the embedded operator): the bound certified training minimises. The
    statistics of its solves go to ``layer.last_interval_solve``."""
    emb = MixedMonotoneEmbedding(layer.operator)
    solver = layer.solver if layer.training or layer.eval_solver is None else layer.eval_solver
    layer.last_interval_solve = record = SolveRecord()
    z = equilibrium(emb, layer.activation, torch.cat([y_lo, y_hi], 1), solver, layer.backward_method, record)
    return _halves(z)


def head_margins(head: nn.Linear, f_lo: Tensor, f_hi: Tensor, labels: Tensor | None = None) -> Tensor:
    """Lower bounds of ``y_k − y_l`` over the feature box ``[f_lo, f_hi]`` of a linear head, the difference taken
    before bounding (tighter than differencing logit bounds): ``(B, K, K)``, or with ``labels``, ``(B, K)``
    for ``k`` the label (``0`` at the label). Widened by the rounding of ``F``-term dot products."""
    centre, radius = (f_hi + f_lo) / 2, (f_hi - f_lo) / 2
    w, b = head.weight, head.bias
    if labels is None:  # every pair: (K, K, F), shared by the batch
        d, bias, spec = w[:, None, :] - w[None, :, :], b[:, None] - b[None, :], "klf,bf->bkl"
    else:  # the label against every class: (B, K, F)
        d, bias, spec = w[labels][:, None, :] - w[None, :, :], b[labels][:, None] - b[None, :], "bkf,bf->bk"
    mid = torch.einsum(spec, d, centre) + bias
    spread = torch.einsum(spec, d.abs(), radius)
    eps = torch.finfo(centre.dtype).eps
    slack = (w.shape[1] + 6) * eps * (torch.einsum(spec, d.abs(), centre.abs() + radius) + b.abs().sum())
    return mid - spread - slack


def readout_box(readout: Callable[[Tensor], Tensor], terms: int, z_lo: Tensor, z_hi: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds of a monotone linear ``readout`` (non-negative entries, each output a sum of ``terms`` inputs)
    over ``[z_lo, z_hi]``, widened by its rounding: a sum rounds relative to the magnitudes it adds (``|z|``
    through the readout), not to its result, which cancels where ``z`` changes sign (activations other than
    ReLU)."""
    f_lo, f_hi = readout(z_lo), readout(z_hi)
    scale = torch.maximum(readout(z_lo.abs()), readout(z_hi.abs()))
    slack = (terms + 2) * torch.finfo(f_lo.dtype).eps * scale
    return f_lo - slack, f_hi + slack


def enclosed_margins(
    embedding: Embedding | TrainableOperator, act: Activation, y_lo: Tensor, y_hi: Tensor,
    readout: Callable[[Tensor], Tensor], readout_terms: int, head: nn.Linear, tol: float = 1e-10,
) -> Tensor:
    """Sound lower bounds ``(B, K, K)`` of every logit difference of ``head(readout(z*))`` over the equilibria of
    ``y ∈ [y_lo, y_hi]``: :func:`enclose`, then :func:`readout_box`, then :func:`head_margins`."""
    with torch.no_grad():
        z_lo, z_hi, _ = enclose(embedding, act, y_lo, y_hi, tol)
        return head_margins(head, *readout_box(readout, readout_terms, z_lo, z_hi))


def abs_linear(module: nn.Module) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor], int]:
    """``(x ↦ module(x), x ↦ |A|x, terms)`` of an ``nn.Linear`` or zero-padded stride-1 ``nn.Conv2d``."""
    if isinstance(module, nn.Linear):
        return module, lambda x: F.linear(x, module.weight.abs()), module.in_features + 1
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and module.stride == (1, 1):
        pad = module.padding
        return module, lambda x: F.conv2d(x, module.weight.abs(), padding=pad), math.prod(module.weight.shape[1:]) + 1
    raise InputError(f"no interval map for {type(module).__name__}")

"""Memory of forward + backward does not grow with the number of iterations (SPEC 3).

Two measures: the bytes autograd saves for backward (exact), and the heap in use (glibc's allocator
statistics) sampled at every iteration of the forward and the adjoint solve.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
import torch

import mondeq
from mondeq import (
    Anderson,
    ConvMonotone,
    DenseMonotone,
    Diagonal,
    DouglasRachford,
    ForwardBackward,
    MultiTierMonotone,
    PeacemanRachford,
    ReLU,
)


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.square().sum().backward()
    return total


def _problem(kind: str = "dense"):
    torch.manual_seed(0)
    if kind == "conv":
        op = ConvMonotone(8, (16, 16), 3, dtype=torch.float64)
    elif kind == "multitier":
        op = MultiTierMonotone((4, 8), (16, 16), 3, dtype=torch.float64)
    else:
        op = DenseMonotone(256, dtype=torch.float64)
    y = torch.randn(16 if kind != "dense" else 64, *op.shape, dtype=torch.float64, requires_grad=True)
    return op, y


def test_saved_tensors_do_not_grow_with_iterations() -> None:
    op, y = _problem()
    sizes, iters = [], []
    for tol in (1e-2, 1e-6, 1e-12):
        record = mondeq.SolveRecord()
        sizes.append(_saved_bytes(
            lambda tol=tol, record=record: mondeq.equilibrium(op, ReLU(), y, PeacemanRachford(tol=tol),
                                                              record=record)))
        iters.append(record.forward.iterations + record.backward.iterations)
    assert iters[2] >= 4 * iters[0]
    assert sizes[0] == sizes[1] == sizes[2]
    # the measure does see growth when a graph is built through the iterations
    w = op.weight().detach()

    def unrolled(k: int):
        def run():
            z = torch.zeros_like(y)
            for _ in range(k):
                z = torch.relu(0.5 * z + 0.5 * (z @ w.T + y))
            return z
        return run

    assert _saved_bytes(unrolled(40)) > 5 * _saved_bytes(unrolled(5))


def _heap_in_use():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError, TypeError):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")]

    mallinfo2.restype = MallInfo2

    def in_use() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


SOLVERS = {
    "pr": lambda tol: PeacemanRachford(tol=tol),
    "dr": lambda tol: DouglasRachford(tol=tol, max_iter=2000),
    "fb": lambda tol: ForwardBackward(tol=tol, max_iter=20_000),
    "pr+anderson": lambda tol: Anderson(PeacemanRachford(tol=tol)),
}


@pytest.mark.skipif(_heap_in_use() is None, reason="needs glibc's mallinfo2")
@pytest.mark.parametrize("name,kind", [(name, "dense") for name in SOLVERS] + [("pr", "conv"), ("pr", "multitier")])
def test_peak_heap_does_not_grow_with_iterations(name: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    in_use = _heap_in_use()
    samples: list[int] = []

    class Sampling(ReLU):
        def prox(self, v, alpha):
            samples.append(in_use())
            return super().prox(v, alpha)

    diagonal_prox = Diagonal.prox

    def sampling_diagonal(self, v, alpha):
        samples.append(in_use())
        return diagonal_prox(self, v, alpha)

    monkeypatch.setattr(Diagonal, "prox", sampling_diagonal)
    op, y = _problem(kind)
    op.frozen().resolvent(1.0)  # factorise outside the measurement
    peaks, iters = [], []
    for tol in (1e-2, 1e-12, 1e-2, 1e-12):
        samples.clear()
        base = in_use()
        record = mondeq.SolveRecord()
        z = mondeq.equilibrium(op, Sampling(), y, SOLVERS[name](tol), record=record)
        z.square().sum().backward()
        y.grad = None
        peaks.append(max(samples) - base)
        iters.append(record.forward.iterations + record.backward.iterations)
    one_tensor = y.numel() * y.element_size()
    assert iters[1] >= 4 * iters[0]
    # many times more iterations, the same peak up to a few tensors (no per-iteration growth)
    assert abs(peaks[3] - peaks[2]) <= 4 * one_tensor, (peaks, iters)
    assert peaks[3] <= 40 * one_tensor


def test_the_benchmarks_memory_counter_counts_each_storage_once() -> None:
    """``mondeq.bench.SavedBytes``, which the unrolled and TorchDEQ benchmarks report: ``a * a`` saves ``a``
    twice (one storage, 4,000 bytes), ``exp`` saves its 4,000-byte output; an excluded storage is not counted;
    an object's tensors count once however often they are held."""
    from mondeq.bench import SavedBytes

    a = torch.randn(1000, requires_grad=True)
    counter = SavedBytes([])
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        (a * a).exp().sum().backward()
    assert counter.total == 8000
    counter = SavedBytes([a])
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        (a * a).sum().backward()
    assert counter.total == 0
    w = torch.zeros(10, 10, dtype=torch.float64)

    class Holder:
        def __init__(self) -> None:
            self.w, self.views = w, {"t": w.T, "list": [w[0], torch.zeros(3)]}

    counter.add_object(Holder())
    assert counter.total == 800 + 12

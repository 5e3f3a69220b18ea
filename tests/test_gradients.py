"""Implicit gradients (SPEC 3): gradcheck in float64 for every solver, agreement with dense solves,
approximate methods as named options, parameters modified between forward and backward."""

from __future__ import annotations

import pytest
import torch
from conftest import dense_equilibrium, dense_input_gradient
from torch import nn

import mondeq
from mondeq import (
    Anderson,
    DenseMonotone,
    DouglasRachford,
    ForwardBackward,
    ImplicitBackward,
    JacobianFreeBackward,
    LeakyReLU,
    PeacemanRachford,
    PhantomBackward,
    ReLU,
)

TIGHT = {
    "fb": ForwardBackward(tol=1e-12, max_iter=20_000),
    "pr": PeacemanRachford(tol=1e-12, max_iter=5000),
    "dr": DouglasRachford(tol=1e-12, max_iter=10_000),
    "pr+anderson": Anderson(PeacemanRachford(tol=1e-12, max_iter=5000)),
    "fb+anderson": Anderson(ForwardBackward(tol=1e-12, max_iter=20_000)),
}


class Net(nn.Module):
    def __init__(self, d: int, n: int, solver, act=None, normalized: bool = False) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.randn(n, d, dtype=torch.float64) / d**0.5)
        self.b = nn.Parameter(0.5 * torch.randn(n, dtype=torch.float64))
        self.op = DenseMonotone(n, m=0.5, normalized=normalized, dtype=torch.float64)
        self.solver, self.act = solver, act or ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mondeq.equilibrium(self.op, self.act, x @ self.U.T + self.b, self.solver)


def _functional(net: Net):
    names = [k for k, _ in net.named_parameters()]
    inputs = [p.detach().clone().requires_grad_() for _, p in net.named_parameters()]

    def f(x, *params):
        return torch.func.functional_call(net, dict(zip(names, params, strict=True)), (x,))

    return f, names, inputs


@pytest.mark.parametrize("name", list(TIGHT))
def test_gradcheck_every_solver(name: str) -> None:
    torch.manual_seed(0)
    net = Net(4, 6, TIGHT[name])
    f, names, params = _functional(net)
    assert names == ["U", "b", "op.A", "op.B"]
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("normalized,act", [(True, ReLU()), (False, LeakyReLU(0.3))])
def test_gradcheck_normalized_form_and_leaky(normalized: bool, act) -> None:
    torch.manual_seed(1)
    net = Net(3, 5, TIGHT["pr"], act, normalized)
    f, names, params = _functional(net)
    if normalized:
        assert names[-2:] == ["op.g", "op.h"]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", list(TIGHT))
@pytest.mark.parametrize("slope", [0.0, 0.25])
def test_implicit_gradient_equals_dense_solve(name: str, slope: float) -> None:
    torch.manual_seed(2)
    n, batch = 30, 8
    op = DenseMonotone(n, m=0.5, dtype=torch.float64)
    act = ReLU() if slope == 0 else LeakyReLU(slope)
    y = (2 * torch.randn(batch, n, dtype=torch.float64)).requires_grad_()
    g = torch.randn(batch, n, dtype=torch.float64)
    z = mondeq.equilibrium(op, act, y, TIGHT[name])
    z.backward(g)
    w = op.weight().detach()
    z_ref = dense_equilibrium(w, y.detach(), slope, start=z.detach())
    u_ref = dense_input_gradient(w, z_ref, y.detach(), g, slope)
    rel = (y.grad - u_ref).norm() / u_ref.norm()
    assert rel <= 1e-8
    # ∂ℓ/∂W = u z*ᵀ, chained to A and B
    weight = op.weight()
    (grad_a, grad_b) = torch.autograd.grad(weight, (op.A, op.B), u_ref.T @ z_ref)
    for p, ref in ((op.A, grad_a), (op.B, grad_b)):
        assert (p.grad - ref).norm() <= 1e-8 * ref.norm()


def test_approximate_gradients_are_named_options() -> None:
    torch.manual_seed(3)
    op = DenseMonotone(20, dtype=torch.float64)
    y = torch.randn(5, 20, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 20, dtype=torch.float64)
    grads = {}
    for name, method in (("exact", ImplicitBackward()), ("jfb", JacobianFreeBackward()),
                         ("phantom", PhantomBackward(steps=5)), ("phantom100", PhantomBackward(steps=200))):
        y.grad = None
        record = mondeq.SolveRecord()
        mondeq.equilibrium(op, ReLU(), y, PeacemanRachford(tol=1e-12), method, record).backward(g)
        grads[name] = y.grad.clone()
        assert (record.backward is not None) == (name == "exact")
    z = mondeq.solve(op, ReLU(), y.detach(), PeacemanRachford(tol=1e-12)).z
    d = ReLU().derivative(z @ op.weight().detach().T + y.detach())
    torch.testing.assert_close(grads["jfb"], d * g)
    assert (grads["jfb"] - grads["exact"]).norm() > 1e-3 * grads["exact"].norm()
    # the damped unrolled iteration converges to the exact gradient as its steps grow
    assert (grads["phantom100"] - grads["exact"]).norm() <= 1e-8 * grads["exact"].norm()
    with pytest.raises(mondeq.InputError):
        PhantomBackward(steps=0)


def test_backward_solver_can_differ_and_reports_statistics() -> None:
    torch.manual_seed(4)
    layer = mondeq.EquilibriumLayer(
        nn.Linear(10, 16), DenseMonotone(16), "relu",
        solver=PeacemanRachford(tol=1e-4),
        backward=ImplicitBackward(DouglasRachford(tol=1e-6)),
    )
    layer(torch.randn(7, 10)).sum().backward()
    rec = layer.last_solve
    assert rec.forward.solver == "peaceman-rachford" and rec.forward.converged
    assert rec.backward.solver == "douglas-rachford" and rec.backward.max_residual <= 1e-6
    assert all(p.grad is not None for p in layer.parameters())


def test_modifying_parameters_before_backward_is_an_error() -> None:
    op = DenseMonotone(8)
    y = torch.randn(3, 8, requires_grad=True)
    z = mondeq.equilibrium(op, ReLU(), y)
    with torch.no_grad():
        op.A.add_(0.1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_model_forward_backward_and_shape_errors() -> None:
    model = mondeq.FCMonDEQ()
    assert sum(p.numel() for p in model.parameters()) == 84_313
    x = torch.randn(16, 1, 28, 28)
    out = model(x)
    out.logsumexp(1).sum().backward()
    assert out.shape == (16, 10)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(mondeq.InputError, match="shape"):
        model(torch.randn(16, 784))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(mondeq.InputError, match="NaN"):
        model(bad)


def test_no_graph_where_nothing_needs_a_gradient() -> None:
    """Under ``no_grad`` (evaluation, attacks' forward passes) the layer solves and keeps nothing for a
    backward pass; with gradients on it records one."""
    torch.manual_seed(0)
    op = mondeq.DenseMonotone(6, m=0.5, dtype=torch.float64)
    y = torch.randn(3, 6, dtype=torch.float64)
    record = mondeq.SolveRecord()
    with torch.no_grad():
        z = mondeq.equilibrium(op, mondeq.ReLU(), y, record=record)
    assert z.grad_fn is None and record.forward is not None and record.forward.converged
    z2 = mondeq.equilibrium(op, mondeq.ReLU(), y)
    assert z2.grad_fn is not None
    torch.testing.assert_close(z2.detach(), z, atol=0, rtol=0)


@pytest.mark.parametrize("model", ["fc", "conv"])
def test_under_autocast_the_equilibrium_stays_in_float32(model: str) -> None:
    """bfloat16 autocast on the CPU: the input map and the readout run in bfloat16, the equilibrium in float32
    to the solver's tolerance, forward and backward. bfloat16 keeps 8 bits (unit roundoff 2⁻⁸ ≈ 3.9e-3), so
    ``y`` is a few tenths of a percent off; the equilibrium map is Lipschitz in ``y`` with ``(1 + L)/m``
    (``m = 1``, ``L`` below 3 here), which bounds the logits' and gradients' deviation at a few percent.
    The lower bound checks that bfloat16 was used at all."""
    from mondeq.data import load_dataset
    from mondeq.models import build_model

    torch.manual_seed(0)
    net = build_model(model, (1, 28, 28), 10, **({"channels": 8} if model == "conv" else {}))
    layer = next(m for m in net.modules() if isinstance(m, mondeq.EquilibriumLayer))
    layer.solver = mondeq.PeacemanRachford(tol=1e-4)
    splits = load_dataset("mnist-mini", test_subset=16)
    x, labels = splits.normalize(splits.test_images), splits.test_labels
    runs = {}
    for amp in (False, True):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = net(x)
            loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        rec = layer.last_solve
        assert rec is not None and rec.forward is not None and rec.backward is not None
        assert rec.forward.converged and rec.forward.max_residual <= 1e-4
        assert rec.backward.converged and rec.backward.max_residual <= 1e-4
        grads = torch.cat([p.grad.flatten() for p in layer.operator.parameters()])
        runs[amp] = (logits.float().detach(), grads, logits.dtype)
    assert runs[True][2] == torch.bfloat16 and runs[False][2] == torch.float32
    for i in (0, 1):
        rel = float((runs[True][i] - runs[False][i]).norm() / runs[False][i].norm())
        assert 1e-4 < rel < 0.05, (i, rel)

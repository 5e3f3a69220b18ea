"""The CUDA path (skipped without a GPU; `benchmarks/gpu.sh` runs it where there is one): every family's
forward and backward on the GPU against the same model on the CPU, training end to end, and bfloat16
autocast keeping the equilibrium in float32."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import mondeq
from mondeq.models import build_model
from mondeq.solvers import default_solver, make_solver
from mondeq.training import TrainConfig, equilibrium_layers, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

MODELS = {"fc": {"hidden": 24}, "conv": {"channels": 6}, "multitier": {"channels": [4, 6, 6]},
          "nemon-fc": {"hidden": 24}, "opteq-fc": {"hidden": 24}}


def _tight(model: torch.nn.Module) -> None:
    for layer in equilibrium_layers(model):
        layer.solver = make_solver(default_solver(layer.operator.guarantee_type), tol=1e-6, max_iter=5000)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_gpu_computes_what_the_cpu_does(name: str) -> None:
    """Logits and gradients agree between devices. Both solve to 1e-6 in float64: on the CPU, such solves
    differ from 1e-11 ones by at most 2e-6 in the logits and 5e-7 in the gradients (all five models), so 1e-4
    leaves a factor 50 for the devices' different summation orders (~1e-15 relative in float64)."""
    torch.manual_seed(0)
    cpu = build_model(name, (1, 28, 28), 10, **MODELS[name]).double()
    _tight(cpu)
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    labels = torch.arange(8) % 10
    results = []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        logits = model(x.to(device))
        F.cross_entropy(logits, labels.to(device)).backward()
        grads = torch.cat([p.grad.flatten().cpu() for p in model.parameters()])
        results.append((logits.detach().cpu(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-4, rtol=1e-4)


def test_training_on_the_gpu(tmp_path) -> None:
    """Two epochs on the GPU: the loss falls and the checkpoint loads on the CPU."""
    history = train(TrainConfig(device="cuda", epochs=2, train_subset=512, test_subset=128, out=str(tmp_path)),
                    progress=False, log=lambda s: None)
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["missed_solves"] == 0
    ckpt = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())


def test_autocast_on_the_gpu_keeps_the_equilibrium_in_float32() -> None:
    torch.manual_seed(0)
    model = build_model("conv", (1, 28, 28), 10, channels=8).cuda()
    layer = equilibrium_layers(model)[0]
    layer.solver = mondeq.PeacemanRachford(tol=1e-4)
    x = torch.randn(16, 1, 28, 28, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
    F.cross_entropy(logits.float(), torch.zeros(16, dtype=torch.long, device="cuda")).backward()
    rec = layer.last_solve
    assert rec is not None and rec.forward is not None and rec.backward is not None
    assert rec.forward.converged and rec.forward.max_residual <= 1e-4
    assert rec.backward.converged and rec.backward.max_residual <= 1e-4

"""Training, evaluation and checkpoints (the application layer).

:func:`fit` trains any classifier ``nn.Module`` (ours or one composed from our layers) on tensors or a loader,
with a loss, regularisers, callbacks, checkpoints and resume; :func:`train` is the command line's job, a
:class:`TrainConfig` of registry names run through :func:`fit`.
"""

from .checkpoints import load_checkpoint, load_model_state, load_weights, save_atomic
from .config import TrainConfig, build_from_config, config_from_checkpoint
from .distributed import Distributed, process_group
from .loop import (
    Callback,
    Data,
    Objective,
    Regularizer,
    StepInfo,
    cross_entropy,
    equilibrium_layers,
    evaluate,
    fit,
    residual_trace,
    solver_name,
)
from .plots import plot_metrics
from .run import certify_checkpoint, evaluate_checkpoint, model_from_checkpoint, train

__all__ = [
    "Callback",
    "Data",
    "Distributed",
    "Objective",
    "Regularizer",
    "StepInfo",
    "TrainConfig",
    "build_from_config",
    "certify_checkpoint",
    "config_from_checkpoint",
    "cross_entropy",
    "equilibrium_layers",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "model_from_checkpoint",
    "plot_metrics",
    "process_group",
    "residual_trace",
    "save_atomic",
    "solver_name",
    "train",
]

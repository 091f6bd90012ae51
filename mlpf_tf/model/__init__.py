"""The MLPF graph network (Keras 2): config, layers, heads, network, losses, metrics, evaluation.

Importing this package does not import TensorFlow: :mod:`mlpf_tf.model.config` (which the
tuners, the config tools and every command line's flag checks import) stays light, and the
names below are loaded from their modules (which import TensorFlow) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from mlpf_tf.model.config import ModelConfig

_LAZY = {"evaluate": "evaluate", "evaluate_arrays": "evaluate",
         "predict_particles": "evaluate", "MLPFLoss": "losses", "MLPFModel": "network",
         "build_model": "network"}

__all__ = ["MLPFLoss", "MLPFModel", "ModelConfig", "build_model", "evaluate",
           "evaluate_arrays", "predict_particles"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlpf_tf.model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mlpf_tf.model.{module}"), name)

"""The MLPF graph network (Keras 2): config, layers, heads, network, losses, metrics, evaluation.

Importing this package imports TensorFlow (except for :mod:`mlpf_tf.model.config`, which the
tuners and config tools import on its own without TensorFlow).
"""

from mlpf_tf.model.config import ModelConfig
from mlpf_tf.model.evaluate import evaluate, evaluate_arrays, predict_particles
from mlpf_tf.model.losses import MLPFLoss
from mlpf_tf.model.network import MLPFModel, build_model

__all__ = ["MLPFLoss", "MLPFModel", "ModelConfig", "build_model", "evaluate",
           "evaluate_arrays", "predict_particles"]

"""graphc.train -- the training workflow: config, loop, checkpoints, metrics, progress.

``train(TrainConfig(model="mlp"))`` or ``graphc train mlp`` on the command line.
"""
from .checkpoint import CheckpointError, list_checkpoints
from .config import TrainConfig, from_model_defaults
from .loop import Trainer, TrainResult, train
from .setup import Prepared, compile_step, prepare, resolve

__all__ = ["TrainConfig", "Trainer", "TrainResult", "train", "prepare", "resolve",
           "compile_step", "Prepared", "CheckpointError", "list_checkpoints",
           "from_model_defaults"]

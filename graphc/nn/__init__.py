"""graphc.nn -- neural-network functions (losses, activations) and layers.

Layers are functional ``Module``s: ``params = model.init(seed)``, ``model(params, x)``.
"""
from . import init, transformer_layers
from .functional import (binary_cross_entropy_with_logits, cross_entropy, hinge,
                         log_softmax, mse, relu, sigmoid, softmax, softplus, tanh)
from .transformer import (dropout, embedding, gelu, layer_norm,
                          scaled_dot_product_attention)
from .layers import (MLP, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential,
                     Sigmoid, Tanh)
from .conv import avg_pool2d, conv2d, flatten, max_pool2d
from .module import Module, num_params
from .transformer_layers import (GELU, MLP as TransformerMLP, CausalSelfAttention, Dropout,
                                 Embedding, LayerNorm, TransformerBlock)

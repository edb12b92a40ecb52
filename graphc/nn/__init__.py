"""graphc.nn -- neural-network functions (losses, activations) and layers."""
from .functional import (binary_cross_entropy_with_logits, cross_entropy, hinge,
                         log_softmax, mse, relu, sigmoid, softmax, softplus, tanh)

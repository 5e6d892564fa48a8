"""``torch.nn.functional``'s signatures over manualbp's hand-derived Functions.

Each function checks its arguments (the public boundary), raising the exception type that
``torch.nn.functional`` raises with a message naming what was expected and what came, then runs the
``torch.autograd.Function`` of ``manualbp.autograd`` that holds the math, by the fast tier's route
(``manualbp.fast``: the same forward and backward, proven equal bit for bit).

One file per layer family, as ``manualbp/autograd`` and ``manualbp/nn``; ``_checks.py`` holds the checks they share.
"""

from manualbp.functional.activation import gelu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from manualbp.functional.attention import multi_head_attention_forward, scaled_dot_product_attention
from manualbp.functional.conv import conv1d, conv2d
from manualbp.functional.dropout import dropout
from manualbp.functional.linear import linear, linear_activation, mlp, mlp_loss
from manualbp.functional.loss import cross_entropy, mse_loss
from manualbp.functional.normalization import batch_norm, group_norm, layer_norm
from manualbp.functional.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from manualbp.functional.sparse import embedding

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "conv1d",
    "conv2d",
    "cross_entropy",
    "dropout",
    "embedding",
    "gelu",
    "group_norm",
    "layer_norm",
    "leaky_relu",
    "linear",
    "linear_activation",
    "log_softmax",
    "max_pool2d",
    "mlp",
    "mlp_loss",
    "mse_loss",
    "multi_head_attention_forward",
    "relu",
    "scaled_dot_product_attention",
    "sigmoid",
    "softmax",
    "tanh",
]

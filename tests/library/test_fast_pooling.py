"""The fast max pooling (``manualbp.fast.MaxPool2d``) against the reference (``manualbp.autograd.MaxPool2d``): the
same scatter-add, in place, so the same bits; and the reference's own backward under vmap."""

import pytest
import torch
from torch.func import grad, vmap

import manualbp.autograd as A
import manualbp.functional as F
from manualbp import fast

# (input shape, kernel_size, stride, padding, dilation, ceil_mode): overlapping windows sum into one input
CASES = {
    "plain": ((2, 3, 6, 6), (2, 2), (2, 2), (0, 0), (1, 1), False),
    "overlapping": ((2, 2, 7, 6), (3, 3), (1, 2), (1, 1), (1, 1), False),
    "dilated_ceil": ((1, 2, 9, 8), (2, 3), (2, 2), (0, 1), (2, 1), True),
    "empty_batch": ((0, 2, 4, 4), (2, 2), (2, 2), (0, 0), (1, 1), False),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASES)
def test_fast_max_pool2d_gradient_is_the_references_bitwise(case, dtype):
    shape, *options = CASES[case]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, dtype=dtype, generator=generator)
    gradients = []
    for function in (fast.MaxPool2d, A.MaxPool2d):
        leaf = x.clone().requires_grad_()
        output, _ = function.apply(leaf, *options)
        g = torch.randn(output.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        gradients.append(torch.autograd.grad(output, leaf, g)[0])
    assert gradients[0].dtype == dtype and torch.equal(gradients[0], gradients[1])


def test_functional_max_pool2d_takes_the_fast_route_and_passes_gradcheck_with_batched_gradients():
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    output = F.max_pool2d(x, 3, 1, 1)
    assert output.grad_fn._forward_cls.backward is fast.MaxPool2d.backward  # its classic-form twin in eager mode

    def f(x):
        return F.max_pool2d(x, 3, 1, 1)

    # the batched check vmaps the backward over many g: the reference's backward runs there
    assert torch.autograd.gradcheck(f, (x,), check_batched_grad=True)
    assert torch.autograd.gradgradcheck(f, (x,), check_batched_grad=True)


def test_fast_max_pool2d_under_torch_func_vmap_equals_the_reference():
    xs = torch.randn(3, 2, 2, 6, 6, dtype=torch.float64)

    def cost(function):
        return lambda x: function.apply(x, (2, 2), (2, 2), (0, 0), (1, 1), False)[0].square().sum()

    assert torch.equal(vmap(grad(cost(fast.MaxPool2d)))(xs), vmap(grad(cost(A.MaxPool2d)))(xs))

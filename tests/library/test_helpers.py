"""The shared checks of helpers.py can fail: the tight tolerance catches what gradcheck's default lets through, and
every case of manualbp.check.CASES is tested by exactly one layer family's file."""

import pytest
import torch
from conftest import TIGHT
from helpers import FAMILIES
from torch.autograd import gradcheck

from manualbp.check import CASES

DOUBLE = torch.float64


def test_the_tight_tolerance_catches_a_gradient_wrong_by_one_part_in_a_thousand():
    class OffByATenthOfAPercent(torch.autograd.Function):
        @staticmethod
        def forward(z):
            return z * z

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, grad_output):
            (z,) = ctx.saved_tensors
            return grad_output * 2 * z * 1.001

    z = torch.randn(4, dtype=DOUBLE, requires_grad=True)
    assert gradcheck(OffByATenthOfAPercent.apply, (z,), eps=1e-6, atol=1e-5, rtol=1e-3)  # the default lets it pass
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):  # GradcheckError
        gradcheck(OffByATenthOfAPercent.apply, (z,), **TIGHT)


def test_every_case_of_manualbp_check_belongs_to_exactly_one_family():
    names = [case.name for case in CASES]
    in_families = [name for family in FAMILIES.values() for name in family]
    assert sorted(in_families) == sorted(names), "add the new case to helpers.FAMILIES, under its layer's family"

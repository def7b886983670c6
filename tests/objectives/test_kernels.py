"""Meta-data-aware options: reductions to the plain terms, slow reference, gradients."""

import pytest
import torch
import torch.nn.functional as F

from neurosepclr.objectives import (
    align,
    attribute_alignment,
    conditional_align,
    conditional_uniform,
    decoupled_uniformity,
    rbf_kernel,
    sup_align,
    uniform,
    y_aware_infonce,
)
from tests.objectives import reference as ref


def f64(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ages(n, seed=0):
    return 20 + 60 * torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_rbf_kernel_hand_computed_and_categorical_equality():
    k = rbf_kernel(torch.tensor([[0.0], [5.0]]), [5.0])
    torch.testing.assert_close(k, torch.tensor([[1.0, torch.e**-0.5], [torch.e**-0.5, 1.0]]))
    sex = torch.tensor([[0.0], [1.0], [0.0]])
    k_sex = rbf_kernel(sex, [1e-3])
    torch.testing.assert_close(k_sex, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))


def test_rbf_kernel_rejects_nan_and_wrong_bandwidths():
    with pytest.raises(ValueError, match="NaN"):
        rbf_kernel(torch.tensor([[float("nan")], [1.0]]), [1.0])
    with pytest.raises(ValueError, match="bandwidths"):
        rbf_kernel(torch.zeros(3, 2), [1.0])


def test_y_aware_with_identity_kernel_is_infonce():
    z1, z2 = f64(6, 4, seed=1), f64(6, 4, seed=2)
    logits = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / 0.1
    expected = F.cross_entropy(logits, torch.arange(6))
    torch.testing.assert_close(y_aware_infonce(z1, z2, torch.eye(6, dtype=torch.float64), 0.1), expected)


def test_kernel_objectives_agree_with_slow_reference():
    z1, z2, meta = f64(7, 4, seed=3), f64(7, 4, seed=4), ages(7)
    w = rbf_kernel(meta, [5.0])
    w_ref = ref.rbf(meta.numpy(), [5.0])
    assert w.numpy() == pytest.approx(w_ref, abs=1e-12)
    assert y_aware_infonce(z1, z2, w, 0.1).item() == pytest.approx(
        ref.y_aware(z1.numpy(), z2.numpy(), w_ref, 0.1), abs=1e-6
    )
    assert conditional_align(z1, z2, w, 0.5).item() == pytest.approx(
        ref.conditional_align(z1.numpy(), z2.numpy(), w_ref, 0.5), abs=1e-6
    )
    assert conditional_uniform(z1, w, 0.5).item() == pytest.approx(
        ref.conditional_uniform(z1.numpy(), w_ref, 0.5), abs=1e-6
    )
    assert decoupled_uniformity(z1, z2).item() == pytest.approx(
        ref.decoupled(z1.numpy(), z2.numpy()), abs=1e-6
    )
    assert decoupled_uniformity(z1, z2, w, 0.01).item() == pytest.approx(
        ref.decoupled(z1.numpy(), z2.numpy(), w_ref, 0.01), abs=1e-6
    )
    x, a = f64(7, seed=5), torch.rand(7, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert sup_align(x, a, 0.025).item() == pytest.approx(
        ref.sup_align(x.numpy(), a.numpy(), 0.025), abs=1e-6
    )


def test_conditional_terms_reduce_to_plain_terms_without_shared_metadata():
    z1, z2 = f64(5, 3, seed=7), f64(5, 3, seed=8)
    eye = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(conditional_align(z1, z2, eye, 0.5), align(z1, z2, 0.5))
    torch.testing.assert_close(conditional_uniform(z1, eye, 0.5), uniform(z1, 0.5))


def test_conditional_uniform_with_nothing_to_repel_is_zero():
    z = f64(4, 3).requires_grad_()
    value = conditional_uniform(z, torch.ones(4, 4, dtype=torch.float64))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(z.grad).all()


def test_kernel_objectives_pass_gradcheck():
    z1 = f64(5, 3, seed=9).requires_grad_()
    z2 = f64(5, 3, seed=10).requires_grad_()
    w = rbf_kernel(ages(5, seed=1), [10.0])
    assert torch.autograd.gradcheck(lambda a, b: y_aware_infonce(a, b, w, 0.1), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: conditional_align(a, b, w, 0.5), (z1, z2))
    assert torch.autograd.gradcheck(lambda a: conditional_uniform(a, w, 0.5), (z1,))
    assert torch.autograd.gradcheck(lambda a, b: decoupled_uniformity(a, b, w, 0.01), (z1, z2))
    attrs = torch.rand(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    is_target = torch.tensor([True, True, False, True, True])
    assert torch.autograd.gradcheck(lambda a, b: attribute_alignment(a, b, attrs, is_target, 0.025), (z1, z2))


def test_sup_align_only_pulls_subjects_with_similar_attributes():
    x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    near = sup_align(x, torch.tensor([0.5, 0.5], dtype=torch.float64), 0.025)
    far = sup_align(x, torch.tensor([0.0, 1.0], dtype=torch.float64), 0.025)
    assert near.item() == pytest.approx(1.0)
    assert far.item() == pytest.approx(torch.exp(torch.tensor(-20.0)).item())


def test_attribute_alignment_rejects_nan_targets_and_too_many_attributes():
    s = f64(3, 2)
    with pytest.raises(ValueError, match="NaN"):
        attribute_alignment(
            s, s, torch.tensor([[0.1], [float("nan")], [0.2]]), torch.ones(3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="salient dimensions"):
        attribute_alignment(s, s, torch.zeros(3, 3), torch.ones(3, dtype=torch.bool))

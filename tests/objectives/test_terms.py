"""Primitive SepCLR terms: hand-computed cases, a slow reference, gradients, degenerate batches."""

import math

import pytest
import torch

from neurosepclr.objectives import (
    align,
    background_energy,
    k_jem,
    mmd,
    nt_xent,
    null_background,
    pairwise_sq_dists,
    uniform,
)
from tests.objectives import reference as ref

T = torch.tensor


def f64(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    ("a", "b", "tau", "expected"),
    [
        ([[0.0, 0.0]], [[1.0, 0.0]], 0.5, 1.0),
        ([[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]], 0.5, 2.5),
        ([[1.0, 1.0]], [[1.0, 1.0]], 0.5, 0.0),
        ([[0.0], [0.0]], [[1.0], [1.0]], 0.25, 2.0),
    ],
)
def test_align_hand_computed(a, b, tau, expected):
    assert align(T(a), T(b), tau).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("z", "tau", "expected"),
    [
        ([[0.0, 0.0], [1.0, 0.0]], 0.5, -1.0),
        ([[0.0], [1.0], [2.0]], 0.5, math.log((2 * math.exp(-1) + math.exp(-4)) / 3)),
        ([[3.0, 3.0], [3.0, 3.0]], 0.5, 0.0),  # identical rows: nothing spread, log 1
    ],
)
def test_uniform_hand_computed(z, tau, expected):
    assert uniform(T(z), tau).item() == pytest.approx(expected)


def test_k_jem_hand_computed():
    c = T([[1.0, 0.0], [0.0, 1.0]])
    s = T([[0.0], [0.0]])
    assert k_jem(c, s, 0.5).item() == pytest.approx(math.log((1 + math.exp(-2)) / 2))
    # identical samples: the kernel is 1 everywhere, log((1/B)·B) = 0 (lowest joint entropy)
    same = T([[1.0, 0.0]] * 3)
    assert k_jem(same, torch.zeros(3, 2), 0.5).item() == pytest.approx(0.0)


def test_null_background_and_background_energy_hand_computed():
    s = T([[3.0, 4.0], [1.0, 0.0], [0.5, 0.5]])
    is_target = T([False, True, False])
    assert torch.equal(null_background(s, is_target), T([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
    assert background_energy(s, is_target).item() == pytest.approx((25.0 + 0.5) / 2)


def test_null_background_blocks_gradient_of_background_rows():
    s = f64(4, 3).requires_grad_()
    is_target = T([True, False, True, False])
    null_background(s, is_target).pow(2).sum().backward()
    assert torch.all(s.grad[~is_target] == 0)
    assert torch.all(s.grad[is_target] != 0)


def test_pairwise_sq_dists_matches_definition_and_is_symmetric():
    z = f64(6, 4)
    expected = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    got = pairwise_sq_dists(z)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(got, got.T)


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_terms_agree_with_slow_reference(tau):
    a, b = f64(7, 5, seed=1), f64(7, 5, seed=2)
    c, s = f64(7, 4, seed=3), f64(7, 3, seed=4)
    assert align(a, b, tau).item() == pytest.approx(ref.align(a.numpy(), b.numpy(), tau), abs=1e-6)
    assert uniform(a, tau).item() == pytest.approx(ref.uniform(a.numpy(), tau), abs=1e-6)
    assert k_jem(c, s, tau).item() == pytest.approx(ref.k_jem(c.numpy(), s.numpy(), tau), abs=1e-6)
    assert nt_xent(a, b, tau).item() == pytest.approx(ref.nt_xent(a.numpy(), b.numpy(), tau), abs=1e-6)


def test_nt_xent_hand_computed_and_rewards_aligned_views():
    # two subjects, views identical and orthogonal to the other subject: each anchor sees its
    # positive at cosine 1 and two negatives at cosine 0 → −1/τ + log(e^{1/τ} + 2)
    z = T([[1.0, 0.0], [0.0, 1.0]])
    assert nt_xent(z, z, 0.5).item() == pytest.approx(-2.0 + math.log(math.exp(2.0) + 2.0))
    a, b = f64(16, 8, seed=8), f64(16, 8, seed=9)
    assert nt_xent(a, a + 0.01 * b).item() < nt_xent(a, b).item()


def test_terms_pass_gradcheck_in_float64():
    a = f64(5, 3, seed=5).requires_grad_()
    b = f64(5, 3, seed=6).requires_grad_()
    c = f64(5, 4, seed=7).requires_grad_()
    is_target = T([True, False, True, True, False])
    assert torch.autograd.gradcheck(lambda x, y: align(x, y, 0.5), (a, b))
    assert torch.autograd.gradcheck(lambda x: uniform(x, 0.5), (a,))
    assert torch.autograd.gradcheck(lambda x, y: k_jem(x, y, 0.5), (c, a))
    assert torch.autograd.gradcheck(lambda x: background_energy(x, is_target), (a,))
    assert torch.autograd.gradcheck(lambda x, y: nt_xent(x, y, 0.5), (a, b))
    assert torch.autograd.gradcheck(lambda x: uniform(null_background(x, is_target), 0.5), (a,))


@pytest.mark.parametrize("n", [0, 1])
def test_terms_without_pairs_are_zero_with_finite_gradient(n):
    z = f64(n, 3).requires_grad_()
    terms = (uniform(z), align(z, z), background_energy(z, torch.ones(n, dtype=torch.bool)), nt_xent(z, z))
    for value in terms:
        assert value.item() == 0.0
        value.backward()
        assert torch.isfinite(z.grad).all()


def test_uniform_gradient_is_finite_for_identical_rows():
    z = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    uniform(z).backward()
    assert torch.isfinite(z.grad).all()


def test_mmd_is_zero_for_one_sample_and_grows_with_the_shift():
    x = f64(200, 3, seed=1)
    assert mmd(x, x).item() == pytest.approx(0.0, abs=1e-12)
    same = mmd(x, f64(200, 3, seed=2)).item()
    shifted = [mmd(x, f64(200, 3, seed=2) + shift).item() for shift in (1.0, 2.0, 4.0)]
    assert 0.0 <= same < shifted[0] < shifted[1] < shifted[2]
    # symmetric in the two samples, and an empty group gives an attached zero
    assert mmd(x[:10], x[10:] + 1).item() == pytest.approx(mmd(x[10:] + 1, x[:10]).item())
    empty = mmd(x[:0].requires_grad_(), x.clone().requires_grad_())
    assert empty.item() == 0.0 and empty.requires_grad


def test_mmd_gradient_descent_brings_two_groups_together():
    x = f64(20, 4, seed=3).requires_grad_()
    y = f64(20, 4, seed=4) + 3.0
    opt = torch.optim.Adam([x], lr=0.1)
    first = mmd(x, y).item()
    gap = (x.detach().mean(0) - y.mean(0)).norm()
    for _ in range(200):
        opt.zero_grad()
        loss = mmd(x, y)
        loss.backward()
        assert torch.isfinite(x.grad).all()
        opt.step()
    assert mmd(x, y).item() < 0.2 * first
    assert (x.detach().mean(0) - y.mean(0)).norm() < 0.5 * gap

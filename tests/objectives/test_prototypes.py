"""The optional prototype (SwAV swapped-assignment) term on targets' salient projections."""

import pytest
import torch

from neurosepclr.config import load_config
from neurosepclr.objectives import loss_from_config
from neurosepclr.objectives.sepclr import SepCLRLoss
from neurosepclr.objectives.terms import sinkhorn_assignments, swapped_prototype_loss


def test_sinkhorn_gives_balanced_soft_assignments():
    torch.manual_seed(0)
    scores = torch.randn(12, 3)
    scores[:, 0] += 5.0  # every sample prefers prototype 0: Sinkhorn still spreads the mass
    q = sinkhorn_assignments(scores, eps=0.5, iterations=50)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(12))
    torch.testing.assert_close(q.sum(dim=0), torch.full((3,), 4.0), atol=1e-3, rtol=0)
    assert not q.requires_grad


def test_swapped_loss_is_lower_when_views_agree_on_clusters():
    torch.manual_seed(1)
    prototypes = torch.eye(3, 8)
    members = torch.arange(30) % 3
    clustered = prototypes[members] + 0.05 * torch.randn(30, 8)
    agree = swapped_prototype_loss(clustered, clustered + 0.05 * torch.randn(30, 8), prototypes)
    shuffled = clustered[torch.randperm(30)]
    disagree = swapped_prototype_loss(clustered, shuffled, prototypes)
    assert agree < disagree - 0.5


def test_gradient_reaches_embeddings_and_prototypes():
    z1 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    prototypes = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    swapped_prototype_loss(z1, z2, prototypes).backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
               for t in (z1, z2, prototypes))  # fmt: skip


def test_term_sees_targets_only_and_is_zero_without_them():
    torch.manual_seed(2)
    c1, c2, s1, s2 = (torch.randn(8, 4, requires_grad=True) for _ in range(4))
    prototypes = torch.randn(3, 4, requires_grad=True)
    loss = SepCLRLoss(beta_proto=1.0)
    none = loss(c1, c2, s1, s2, torch.zeros(8, dtype=torch.bool), prototypes=prototypes)
    assert float(none.prototype) == 0.0 and torch.isfinite(none.total)
    targets = torch.tensor([True, True, True, True, False, False, False, False])
    terms = loss(c1, c2, s1, s2, targets, prototypes=prototypes)
    terms.prototype.backward()
    assert s1.grad[~targets].abs().sum() == 0 and s1.grad[targets].abs().sum() > 0


def test_config_switches_the_term_on_and_the_published_objective_stays_the_default():
    assert loss_from_config(load_config().loss).beta_proto == 0.0
    on = loss_from_config(load_config(None, ["loss.salient_prototypes=6", "loss.beta_proto=0.5"]).loss)
    assert on.beta_proto == 0.5
    with pytest.raises(ValueError, match="needs the prototypes"):
        on(*(torch.randn(4, 3) for _ in range(4)), torch.tensor([True, True, False, False]))

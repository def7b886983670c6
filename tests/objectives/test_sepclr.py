"""SepCLRLoss: hand-computed total, slow reference, invariances, degenerate batches, optimisation."""

import math

import pytest
import torch

from neurosepclr.config import load_config
from neurosepclr.objectives import (
    ConditionalCommon,
    DecoupledCommon,
    NTXentCommon,
    SepCLRLoss,
    SepCLRTerms,
    YAwareCommon,
    loss_from_config,
    nt_xent,
)
from tests.objectives import reference as ref


def f64(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def batch(n=8, dc=4, ds=3, seed=0):
    y = torch.zeros(n, dtype=torch.bool)
    y[n // 2 :] = True
    return (
        f64(n, dc, seed=seed),
        f64(n, dc, seed=seed + 1),
        f64(n, ds, seed=seed + 2),
        f64(n, ds, seed=seed + 3),
        y,
    )


def test_hand_computed_two_subject_batch():
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    s = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([False, True])
    terms = SepCLRLoss(beta_s=1.0, beta_reg=10.0, lambda_jem=10.0, tau=0.5)(c, c.clone(), s, s.clone(), y)
    # L_C = 0 + 2·log e^{-2}; s' = [0, 2]: L_S = 0 + 2·log e^{-4}; L_REG = ½(1 + 1);
    # k-JEM: each row log((1 + e^{-2}e^{-4}) / 2)
    jem = math.log((1 + math.exp(-6)) / 2)
    assert terms.common.item() == pytest.approx(-4.0)
    assert terms.salient.item() == pytest.approx(-8.0)
    assert terms.background.item() == pytest.approx(1.0)
    assert terms.jem.item() == pytest.approx(jem)
    assert terms.total.item() == pytest.approx(-4.0 - 8.0 + 10.0 + 10.0 * jem)


@pytest.mark.parametrize(
    ("beta_s", "beta_reg", "lam", "tau"),
    [(1.0, 10.0, 10.0, 0.5), (1000.0, 1000.0, 10.0, 0.5), (0.3, 2.0, 0.0, 0.1)],
)
def test_total_and_terms_agree_with_slow_reference(beta_s, beta_reg, lam, tau):
    c1, c2, s1, s2, y = batch(seed=11)
    terms = SepCLRLoss(beta_s, beta_reg, lam, tau)(c1, c2, s1, s2, y)
    expected = ref.sepclr(
        c1.numpy(), c2.numpy(), s1.numpy(), s2.numpy(), y.tolist(), beta_s, beta_reg, lam, tau
    )
    got = (terms.total, terms.common, terms.salient, terms.background, terms.jem)
    for value, want in zip(got, expected, strict=True):
        assert value.item() == pytest.approx(want, abs=1e-6, rel=1e-9)
    assert terms.total.item() == pytest.approx(
        (terms.common + beta_s * terms.salient + beta_reg * terms.background + lam * terms.jem).item()
    )
    assert terms.salient.item() == pytest.approx((terms.salient_align + terms.salient_uniform).item())


def test_common_head_outputs_are_normalised_by_the_loss():
    c1, c2, s1, s2, y = batch(seed=3)
    loss = SepCLRLoss()
    torch.testing.assert_close(loss(c1, c2, s1, s2, y).total, loss(3.0 * c1, 0.5 * c2, s1, s2, y).total)


def test_gradcheck_of_the_whole_objective():
    c1, c2, s1, s2, y = batch(n=5, dc=3, ds=2, seed=21)
    inputs = tuple(t.requires_grad_() for t in (c1, c2, s1, s2))
    assert torch.autograd.gradcheck(lambda a, b, c, d: SepCLRLoss()(a, b, c, d, y).total, inputs)


def test_invariant_to_batch_permutation_and_symmetric_in_views():
    c1, c2, s1, s2, y = batch(seed=5)
    loss = SepCLRLoss()
    base = loss(c1, c2, s1, s2, y)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    permuted = loss(c1[perm], c2[perm], s1[perm], s2[perm], y[perm])
    swapped = loss(c2, c1, s2, s1, y)
    for other in (permuted, swapped):
        for a, b in zip(base, other, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", ["no_target", "no_background", "two_subjects"])
def test_degenerate_batches_are_finite_with_finite_gradients(case):
    c1, c2, s1, s2, _ = batch(n=2 if case == "two_subjects" else 6, seed=7)
    n = c1.shape[0]
    y = {
        "no_target": torch.zeros(n, dtype=torch.bool),
        "no_background": torch.ones(n, dtype=torch.bool),
        "two_subjects": torch.tensor([False, True]),
    }[case]
    inputs = [t.requires_grad_() for t in (c1, c2, s1, s2)]
    terms = SepCLRLoss()(*inputs, y)
    assert all(torch.isfinite(v) for v in terms)
    terms.total.backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs)
    if case == "no_target":
        assert terms.salient.item() == 0.0  # s' = 0 everywhere: nothing to align, log mean e^0 = 0
    if case == "no_background":
        assert terms.background.item() == 0.0


def test_integer_target_mask_is_accepted_and_bad_shapes_name_them():
    c1, c2, s1, s2, y = batch(seed=9)
    loss = SepCLRLoss()
    torch.testing.assert_close(loss(c1, c2, s1, s2, y.long()).total, loss(c1, c2, s1, s2, y).total)
    with pytest.raises(ValueError, match=r"s1=\(8, 3\)"):
        loss(c1, c2, s1, s2[:5], y)
    with pytest.raises(ValueError, match="0/1"):
        loss(c1, c2, s1, s2, y.long() * 2)


def test_optimising_free_embeddings_decreases_the_loss_and_separates_the_spaces():
    torch.manual_seed(0)
    n = 32
    y = torch.arange(n) >= n // 2
    params = [torch.randn(n, 8, requires_grad=True) for _ in range(2)] + [
        torch.randn(n, 4, requires_grad=True) for _ in range(2)
    ]
    loss = SepCLRLoss()
    opt = torch.optim.Adam(params, lr=0.05)
    first = loss(*params, y)
    for _ in range(200):
        opt.zero_grad()
        terms = loss(*params, y)
        terms.total.backward()
        opt.step()
    assert terms.total.item() < first.total.item() - 1.0
    # controls pulled to the null vector, patients pushed away from it
    s1 = params[2].detach()
    assert s1[~y].norm(dim=1).mean() < 0.1 < s1[y].norm(dim=1).mean()


def test_meta_data_common_objectives_and_attributes_from_config():
    c1, c2, s1, s2, y = batch(seed=13)
    meta = torch.cat(
        [20 + 60 * torch.rand(8, 1, dtype=torch.float64), torch.randint(0, 2, (8, 1)).double()], dim=1
    )
    for common in ("y_aware", "conditional", "decoupled"):
        cfg = load_config(
            overrides=[f"loss.common={common}", "loss.metadata=[age, sex]", "loss.metadata_sigma=[5, 0.001]"]
        )
        loss = loss_from_config(cfg.loss)
        assert isinstance(
            loss.common,
            {"y_aware": YAwareCommon, "conditional": ConditionalCommon, "decoupled": DecoupledCommon}[common],
        )
        terms = loss(c1, c2, s1, s2, y, metadata=meta)
        assert torch.isfinite(terms.total)
        assert terms.common.item() != pytest.approx(SepCLRLoss()(c1, c2, s1, s2, y).common.item())
    with pytest.raises(ValueError, match="meta-data"):
        loss(c1, c2, s1, s2, y)
    cfg = load_config(overrides=["loss.attributes=[mmse]", "loss.beta_attr=2.0"])
    loss = loss_from_config(cfg.loss)
    attrs = torch.rand(8, 1, dtype=torch.float64)
    terms = loss(c1, c2, s1, s2, y, attributes=attrs)
    assert terms.attribute.item() > 0
    plain = SepCLRLoss()(c1, c2, s1, s2, y)
    assert terms.total.item() == pytest.approx(plain.total.item() + 2.0 * terms.attribute.item())


def test_single_space_simclr_baseline_is_nt_xent_of_the_common_heads_only():
    c1, c2, s1, s2, y = batch(seed=14)
    cfg = load_config(
        overrides=["loss.common=nt_xent", "loss.beta_s=0", "loss.beta_reg=0", "loss.lambda_jem=0"]
    )
    loss = loss_from_config(cfg.loss)
    assert isinstance(loss.common, NTXentCommon)
    s1.requires_grad_()
    terms = loss(c1, c2, s1, s2, y)
    assert terms.total.item() == pytest.approx(nt_xent(c1, c2, 0.5).item())
    terms.total.backward()
    assert s1.grad is None or not s1.grad.any()  # the salient encoder learns nothing


def test_default_config_gives_the_papers_medical_settings():
    loss = loss_from_config(load_config().loss)
    assert (loss.beta_s, loss.beta_reg, loss.lambda_jem, loss.tau, loss.beta_attr) == (
        1.0,
        10.0,
        10.0,
        0.5,
        0.0,
    )
    assert isinstance(SepCLRLoss()(*batch()), SepCLRTerms)


def test_common_matching_term_pulls_the_diagnosis_out_of_the_common_features():
    """L_MATCH (loss.lambda_match): with the term on, free common features of controls and patients
    that start apart end up drawn from one distribution; off, the term is logged as 0."""
    torch.manual_seed(0)
    n = 32
    y = torch.arange(n) >= n // 2
    heads = [torch.randn(n, 8), torch.randn(n, 8), torch.randn(n, 4), torch.randn(n, 4)]
    offset = y[:, None].float() * 3.0
    features = [(torch.randn(n, 6) + offset).requires_grad_() for _ in range(2)]
    assert SepCLRLoss()(*heads, y).common_match.item() == 0.0
    with pytest.raises(ValueError, match="common features"):
        SepCLRLoss(lambda_match=1.0)(*heads, y)
    loss = SepCLRLoss(lambda_match=10.0)
    gap = (features[0][y].mean(0) - features[0][~y].mean(0)).norm().item()
    opt = torch.optim.Adam(features, lr=0.05)
    first = loss(*heads, y, common_features=tuple(features)).common_match.item()
    for _ in range(150):
        opt.zero_grad()
        terms = loss(*heads, y, common_features=tuple(features))
        terms.total.backward()
        opt.step()
    assert terms.common_match.item() < 0.1 * first
    assert (features[0][y].mean(0) - features[0][~y].mean(0)).norm().item() < 0.25 * gap

"""Tests for methods/ffn.py: PCA, top words, principal angles, matching, concept activation and shares."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lm_interp_plugin.methods.ffn import (
    component_top_words,
    concept_activation,
    concept_shares,
    ffn_pca,
    match_components,
    normalise_rows,
    principal_angles,
)

from tolerances import rounding_bound


def _anisotropic_weights(d_model: int, d_ff: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.1, d_model)
    W = torch.randn(d_model, d_ff, generator=gen) * scales[:, None]
    rot, _ = torch.linalg.qr(torch.randn(d_model, d_model, generator=gen))
    return rot @ W + 0.5  # non-zero mean, so centring matters


@pytest.mark.float_sensitive
@pytest.mark.parametrize("shape", [(16, 64), (24, 12)])  # eigh path (d_ff > d_model) and SVD path
def test_pca_matches_numpy_svd(shape):
    d_model, d_ff = shape
    W = _anisotropic_weights(d_model, d_ff)
    k = 5
    pca = ffn_pca(W, k)
    X = W.double().numpy().T
    Xc = X - X.mean(axis=0)
    _, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    var = S**2 / (d_ff - 1)
    # float32 against float64: the covariance (or SVD) sums n terms, off by ~ sqrt(n) u |C|; by Weyl, so is
    # each eigenvalue (relative error kappa_j = var[0] / var[j]); a component turns by that over its gap
    n = d_model + d_ff  # the covariance's sums, then the eigensolver's
    np.testing.assert_allclose(pca.mean.numpy(), X.mean(axis=0), atol=rounding_bound(1, n) * np.abs(X).max())
    var_rtol = rounding_bound(var[0] / var[k - 1], n)
    np.testing.assert_allclose(pca.explained_variance.numpy(), var[:k], rtol=var_rtol)
    np.testing.assert_allclose(pca.explained_variance_ratio.numpy(), var[:k] / var.sum(), rtol=2 * var_rtol)
    comps = pca.components.double().numpy()
    for j in range(k):
        gap = min(var[j - 1] - var[j] if j else np.inf, var[j] - var[j + 1])
        angle = rounding_bound(var[0] / gap, n)
        assert abs(abs(comps[j] @ Vt[j]) - 1.0) <= angle**2 / 2 + rounding_bound(1, d_model)  # up to sign
        assert comps[j, np.abs(comps[j]).argmax()] > 0  # documented sign convention
    np.testing.assert_allclose(np.linalg.norm(comps, axis=1), 1.0, atol=rounding_bound(1, d_model))
    assert pca.k == k and pca.components.dtype == torch.float32


def test_pca_sign_is_deterministic_under_weight_sign_flip():
    W = _anisotropic_weights(16, 64)
    a = ffn_pca(W, 3).components
    b = ffn_pca(-W, 3).components  # same subspace, every value vector negated
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_pca_rejects_bad_k_and_nan():
    W = _anisotropic_weights(8, 32)
    with pytest.raises(ValueError, match=r"k=9 is out of range.*1 <= k <= 8"):
        ffn_pca(W, 9)
    W[0, 0] = float("nan")
    with pytest.raises(ValueError, match="W_down contains NaN"):
        ffn_pca(W, 2)


def test_component_top_words_keeps_both_poles_and_dedupes():
    E = torch.eye(4)
    E = torch.cat([E, E[:1]])  # row 4 duplicates row 0 under another token id
    tokens = ["good", "bad", "up", "down", "good"]
    comps = torch.tensor([[1.0, -1.0, 0.2, 0.0]]) / math.sqrt(2.04)
    ((pos, neg),) = component_top_words(comps, normalise_rows(E), tokens, top_n=2)
    assert pos == ["good", "up"]  # "good" listed once although two rows score highest
    assert neg == ["bad", "down"]
    with pytest.raises(ValueError, match="tokens has 3 entries"):
        component_top_words(comps, normalise_rows(E), tokens[:3], top_n=2)


def test_principal_angles_zero_for_identical_and_planted_rotation():
    gen = torch.Generator().manual_seed(1)
    d, k = 32, 4
    basis, _ = torch.linalg.qr(torch.randn(d, 2 * k, generator=gen, dtype=torch.float64))
    U, V = basis[:, :k].T, basis[:, k:].T  # orthonormal rows, span(U) orthogonal to span(V)
    assert torch.allclose(principal_angles(U, U), torch.zeros(k, dtype=torch.float64), atol=1e-6)
    # the same subspace under another basis is still angle 0
    mix = torch.randn(k, k, generator=gen, dtype=torch.float64)
    assert principal_angles(U, mix @ U).max() < 1e-6
    planted = torch.tensor([5.0, 12.0, 30.0, 60.0], dtype=torch.float64)
    theta = torch.deg2rad(planted)[:, None]
    rotated = torch.cos(theta) * U + torch.sin(theta) * V  # rotate each direction by its own angle
    np.testing.assert_allclose(principal_angles(U, rotated).numpy(), planted.numpy(), atol=1e-6)
    assert abs(float(principal_angles(U, V).min()) - 90.0) < 1e-6


def test_principal_angles_rejects_dependent_rows():
    A = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="A has linearly dependent rows"):
        principal_angles(A, torch.eye(3)[:2])


def test_match_components_recovers_permutation_and_sign():
    gen = torch.Generator().manual_seed(2)
    A, _ = torch.linalg.qr(torch.randn(16, 5, generator=gen))
    A = A.T
    perm = [3, 0, 4, 1, 2]
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])[:, None]
    B = A[perm] * signs + 0.01 * torch.randn(5, 16, generator=gen)
    matches = match_components(A, B)
    assert [m.base_index for m in matches] == list(range(5))
    assert [m.tuned_index for m in matches] == [perm.index(i) for i in range(5)]
    for m in matches:
        assert abs(abs(m.cosine) - 1) < 0.01
        assert np.sign(m.cosine) == float(signs[m.tuned_index])


def test_concept_activation_against_hand_computation():
    comps = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ffn_out = torch.tensor([[2.0, -1.0, 5.0], [-4.0, 3.0, 0.0]])
    # |proj| per position: [[2, 1], [4, 3]] -> mean over positions [3, 2] -> shares [0.6, 0.4]
    torch.testing.assert_close(concept_activation(ffn_out, comps), torch.tensor([0.6, 0.4]))
    # centred on [0, -2, 0]: [[2, 1, 5], [-4, 5, 0]] -> |proj| [[2, 1], [4, 5]] -> mean [3, 3] -> [0.5, 0.5]
    torch.testing.assert_close(
        concept_activation(ffn_out, comps, torch.tensor([0.0, -2.0, 0.0])), torch.tensor([0.5, 0.5])
    )
    # against a generic computation with random numbers
    gen = torch.Generator().manual_seed(3)
    x, c, m = (
        torch.randn(7, 5, generator=gen),
        torch.randn(3, 5, generator=gen),
        torch.randn(5, generator=gen),
    )
    expected = np.abs((x.numpy() - m.numpy()) @ c.numpy().T).mean(axis=0)
    np.testing.assert_allclose(concept_activation(x, c, m).numpy(), expected / expected.sum(), rtol=1e-5)
    assert torch.equal(concept_activation(torch.zeros(2, 3), comps), torch.zeros(2))
    with pytest.raises(ValueError, match="ffn_out has no positions"):
        concept_activation(torch.zeros(0, 3), comps)


def test_concept_shares_pools_unknown_labels_under_other():
    shares = concept_shares(
        torch.tensor([0.5, 0.2, 0.2, 0.1]),
        ["math", "coding", "weird", "math"],
        ["writing", "coding", "math", "translation"],
    )
    assert shares == pytest.approx(
        {"writing": 0.0, "coding": 0.2, "math": 0.6, "translation": 0.0, "other": 0.2}
    )
    with pytest.raises(ValueError, match="one label per component"):
        concept_shares([0.5, 0.5], ["math"], ["math"])


def test_ffn_probe_is_a_pass_probe():
    from lm_interp_plugin.interpret.ffn_probe import FFNProbe
    from lm_interp_plugin.interpret.probes import Probe

    assert issubclass(FFNProbe, Probe)  # structural: run_pass relies on capture() and metrics()
    assert not issubclass(int, Probe)

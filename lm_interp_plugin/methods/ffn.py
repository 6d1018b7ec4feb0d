"""FFN concepts: PCA of the FFN value vectors, their top words, rotation between models, per-example
activation.

Pure torch/numpy (no lm-eval, no model module names): every function takes weight or activation tensors.

Shapes named once: ``d_model x d_ff`` for a down-projection ``W_down`` (its ``d_ff`` columns are the FFN
value vectors, each a ``d_model`` vector), ``k x d_model`` for a stack of principal components,
``vocab x d_model`` for an embedding matrix, ``n_positions x d_model`` for FFN outputs of one example.

The method follows Wu et al. (NAACL 2024, sec. 5): per layer, PCA of the centred value vectors; each
component projected onto the row-normalised output embeddings gives the words it promotes (positive pole)
and suppresses (negative pole); base vs tuned rotation is measured by principal angles between the top-k
subspaces.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Principal angles and matched cosines are computed in this dtype.
_MATH_DTYPE = torch.float64


@dataclass
class FFNComponents:
    """The top-k principal components of one layer's FFN value vectors.

    Attributes:
        components: ``k x d_model`` float32, unit-norm rows, ordered by decreasing variance. Sign convention:
            each row's largest-magnitude entry is positive (PCA leaves the sign free; fixing it makes
            results reproducible across runs, devices and base/tuned models).
        explained_variance: ``k`` variances along the components (unbiased, divided by ``d_ff - 1``).
        explained_variance_ratio: ``k`` shares of the total variance of the value vectors.
        mean: ``d_model`` mean value vector that was subtracted before the PCA.
    """

    components: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor
    mean: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.components.shape[0])


@dataclass
class ComponentMatch:
    """One base component paired with one tuned component by `match_components`.

    Attributes:
        base_index: row of the base components.
        tuned_index: row of the tuned components.
        cosine: signed cosine between the two rows (the matching itself uses its absolute value).
    """

    base_index: int
    tuned_index: int
    cosine: float


def _check_matrix(name: str, x: torch.Tensor, ndim: int = 2) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor"
        )
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; recompute it in float32")


def _fix_signs(rows: torch.Tensor) -> torch.Tensor:
    """Flip each row so that its largest-magnitude entry is positive (ties: the first such entry)."""
    idx = rows.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(torch.gather(rows, 1, idx))
    signs[signs == 0] = 1
    return rows * signs


def ffn_pca(W_down: torch.Tensor, k: int) -> FFNComponents:
    """PCA of the FFN value vectors (the ``d_ff`` columns of ``W_down``), centred on their mean.

    Value vectors are what an FFN neuron writes into the residual stream, so their principal directions are
    the directions the layer writes most; the paper reads them as concepts. The computation runs in float64
    on the tensor's device: an eigendecomposition of the ``d_model x d_model`` covariance when
    ``d_ff > d_model`` (the usual case, cheaper), otherwise an SVD of the centred ``d_ff x d_model`` matrix.

    Args:
        W_down: ``d_model x d_ff`` down-projection.
        k: number of components to keep, ``1 <= k <= min(d_model, d_ff - 1)``.

    Returns:
        `FFNComponents` with float32 tensors on ``W_down``'s device (see its sign convention).
    """
    _check_matrix("W_down", W_down)
    d_model, d_ff = W_down.shape
    max_k = min(d_model, d_ff - 1)
    if not isinstance(k, int) or k < 1 or k > max_k:
        raise ValueError(
            f"k={k!r} is out of range for W_down of shape {tuple(W_down.shape)}; use 1 <= k <= {max_k}"
        )
    X = W_down.detach().to(_MATH_DTYPE).T  # d_ff x d_model: one value vector per row
    mean = X.mean(dim=0)
    Xc = X - mean
    total_var = (Xc * Xc).sum() / (d_ff - 1)
    if d_ff > d_model:
        cov = (Xc.T @ Xc) / (d_ff - 1)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(evals, descending=True, stable=True)[:k]  # ties: lower index
        variances = evals[order].clamp_min(0)
        comps = evecs[:, order].T
    else:
        _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
        variances = (S[:k] ** 2) / (d_ff - 1)
        comps = Vh[:k]
    comps = _fix_signs(comps / comps.norm(dim=1, keepdim=True))
    ratio = variances / total_var if total_var > 0 else torch.zeros_like(variances)
    return FFNComponents(
        components=comps.float(),
        explained_variance=variances.float(),
        explained_variance_ratio=ratio.float(),
        mean=mean.float(),
    )


def normalise_rows(E: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero), so projections compare directions, not norms."""
    _check_matrix("E", E)
    E = E.detach().float()
    return E / E.norm(dim=1, keepdim=True).clamp_min(eps)


def component_top_words(
    components: torch.Tensor,
    E_out_normed: torch.Tensor,
    tokens: Sequence[str],
    top_n: int,
) -> list[tuple[list[str], list[str]]]:
    """The words each component promotes (positive pole) and suppresses (negative pole).

    Scores are ``components @ E_out_normed.T``; the positive pole lists the ``top_n`` highest-scoring words,
    the negative pole the ``top_n`` lowest (most negative first). The sign is kept because a component's two
    ends usually mean different things. A word string that occurs under several token ids (e.g. ``"cat"``
    and ``" cat"`` after stripping) is listed once, at its best rank.

    Args:
        components: ``k x d_model``.
        E_out_normed: ``vocab x d_model`` row-normalised output embeddings (see `normalise_rows`); may be a
            subset of the vocabulary, e.g. whole words only.
        tokens: ``vocab`` strings, ``tokens[i]`` names row ``i`` of ``E_out_normed``.
        top_n: words per pole.

    Returns:
        One ``(positive_words, negative_words)`` pair per component.
    """
    _check_matrix("components", components)
    _check_matrix("E_out_normed", E_out_normed)
    if components.shape[1] != E_out_normed.shape[1]:
        raise ValueError(
            f"components have d_model={components.shape[1]} but E_out_normed has {E_out_normed.shape[1]}; "
            "pass the output embeddings of the same model"
        )
    if len(tokens) != E_out_normed.shape[0]:
        raise ValueError(
            f"tokens has {len(tokens)} entries but E_out_normed has {E_out_normed.shape[0]} rows; "
            "pass one string per embedding row"
        )
    if top_n < 1:
        raise ValueError(f"top_n={top_n} must be at least 1")
    scores = components.float().to(E_out_normed.device) @ E_out_normed.float().T  # k x vocab
    order = torch.argsort(scores, dim=1, descending=True, stable=True).cpu().numpy()

    def pick(indices: np.ndarray) -> list[str]:
        seen: list[str] = []
        for i in indices:
            word = tokens[int(i)]
            if word not in seen:
                seen.append(word)
                if len(seen) == top_n:
                    break
        return seen

    return [(pick(row), pick(row[::-1])) for row in order]


def _orthonormal_basis(name: str, A: torch.Tensor) -> torch.Tensor:
    """``d x k`` orthonormal basis of the row space of the ``k x d`` matrix ``A``."""
    _check_matrix(name, A)
    Q, R = torch.linalg.qr(A.detach().to(_MATH_DTYPE).T)
    diag = R.diagonal().abs()
    if diag.numel() and diag.min() <= 1e-10 * max(float(diag.max()), 1e-300):
        raise ValueError(f"{name} has linearly dependent rows; pass k independent components")
    return Q


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles, in degrees and ascending, between the subspaces spanned by the rows of A and B.

    0 for a shared direction, 90 for an orthogonal one: the rotation of a layer's top-k concept subspace from
    base to tuned model. Computed as ``arccos`` of the singular values of ``Q_A^T Q_B`` (Björck & Golub),
    with ``arcsin`` of the residual's singular values for the small angles, where ``arccos`` is inaccurate.

    Args:
        A: ``k_a x d`` (rows need not be orthonormal, only independent).
        B: ``k_b x d``.

    Returns:
        ``min(k_a, k_b)`` float64 angles in degrees.
    """
    QA = _orthonormal_basis("A", A)
    QB = _orthonormal_basis("B", B.to(A.device))
    if QA.shape[0] != QB.shape[0]:
        raise ValueError(
            f"A has dimension {QA.shape[0]} but B has {QB.shape[0]}; compare the same layer's spaces"
        )
    if QA.shape[1] > QB.shape[1]:
        QA, QB = QB, QA
    cosines = torch.linalg.svdvals(QA.T @ QB).clamp(0.0, 1.0)  # descending => angles ascending
    angles_cos = torch.arccos(cosines)
    # sin of the angles: singular values of the part of QA orthogonal to span(QB), ascending
    residual = QA - QB @ (QB.T @ QA)
    sines = torch.linalg.svdvals(residual).flip(0).clamp(0.0, 1.0)
    angles_sin = torch.arcsin(sines)
    angles = torch.where(angles_cos < math.pi / 4, angles_sin, angles_cos)
    return torch.rad2deg(angles).cpu()


def match_components(A: torch.Tensor, B: torch.Tensor) -> list[ComponentMatch]:
    """Pair the rows of A with rows of B one to one, maximising the total |cosine| (Hungarian algorithm).

    Principal components are only defined up to sign and, when variances are close, up to order; matching on
    |cosine| says which tuned component continues which base component. Sorted by base index.
    """
    from scipy.optimize import linear_sum_assignment

    _check_matrix("A", A)
    _check_matrix("B", B)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A has d={A.shape[1]} but B has d={B.shape[1]}; match components of the same layer")
    An = A.detach().to(_MATH_DTYPE)
    Bn = B.detach().to(_MATH_DTYPE).to(A.device)
    An = An / An.norm(dim=1, keepdim=True).clamp_min(1e-300)
    Bn = Bn / Bn.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cos = (An @ Bn.T).cpu().numpy()
    rows, cols = linear_sum_assignment(-np.abs(cos))
    return [ComponentMatch(int(r), int(c), float(cos[r, c])) for r, c in sorted(zip(rows, cols))]


def concept_activation(
    ffn_out: torch.Tensor,
    components: torch.Tensor,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """How strongly one example's FFN output uses each component: a distribution over the ``k`` components.

    Definition: ``a_j = mean over positions t of |<ffn_out[t] - mean, components[j]>|``, then
    ``a / sum(a)``. The absolute value counts both poles of a component (writing along it or against it);
    averaging over positions makes examples of different lengths comparable; the normalisation makes it a
    share. ``mean`` is optional: pass the PCA mean to measure the output relative to the average value
    vector; by default the raw output is projected. An all-zero activation gives all zeros (not NaN).

    Args:
        ffn_out: ``n_positions x d_model`` FFN outputs at the target positions of one example.
        components: ``k x d_model`` unit-norm components of the same layer.
        mean: optional ``d_model`` vector subtracted from every position first.

    Returns:
        ``k`` float32 shares summing to 1 (or all zero).
    """
    _check_matrix("ffn_out", ffn_out)
    _check_matrix("components", components)
    if ffn_out.shape[0] == 0:
        raise ValueError("ffn_out has no positions; pass the FFN outputs of at least one target token")
    if ffn_out.shape[1] != components.shape[1]:
        raise ValueError(
            f"ffn_out has d_model={ffn_out.shape[1]} but components have {components.shape[1]}; "
            "use the components of the layer the output came from"
        )
    x = ffn_out.detach().float()
    comps = components.detach().float().to(x.device)
    if mean is not None:
        _check_matrix("mean", mean, ndim=1)
        x = x - mean.detach().float().to(x.device)
    act = (x @ comps.T).abs().mean(dim=0)
    total = act.sum()
    return act / total if total > 0 else torch.zeros_like(act)


def concept_shares(
    component_dist: torch.Tensor | Sequence[float],
    component_labels: Sequence[str],
    concepts: Sequence[str],
) -> dict[str, float]:
    """Sum a distribution over components into a distribution over concept categories.

    Every concept in ``concepts`` gets a key (0.0 when no component carries it); components whose label is not
    in ``concepts`` are pooled under ``"other"``, so the shares sum to the total of ``component_dist``.
    """
    dist = torch.as_tensor(component_dist, dtype=torch.float64).flatten().tolist()
    if len(dist) != len(component_labels):
        raise ValueError(
            f"component_dist has {len(dist)} entries but component_labels has {len(component_labels)}; "
            "pass one label per component"
        )
    shares = {c: 0.0 for c in concepts}
    for value, label in zip(dist, component_labels):
        key = label if label in shares else "other"
        shares[key] = shares.get(key, 0.0) + float(value)
    return shares

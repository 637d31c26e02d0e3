"""Inner products survive projection within the stated bound.

For unit vectors both sketches are unbiased with Var⟨Px, Py⟩ ≤ σ² (SparseJL: σ² = 2/k; factored
Kronecker Gaussian: σ² ≈ 2/k_in + 2/k_out). With 30 fixed-seed pairs we require every error < 5σ
and the mean error to shrink roughly like k^(-1/2) when k grows 16x.
"""

import pytest
import torch

from curator import projections
from curator.projections import FactoredProjector, SparseJL


def _pairs(dim, n=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    y = 0.6 * x + 0.8 * torch.randn(n, dim, generator=gen)  # cosine ≈ 0.6: a correlated, realistic case
    return x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)


def _errors(proj, x, y):
    return ((proj(x) * proj(y)).sum(1) - (x * y).sum(1)).abs()


@pytest.mark.parametrize("nnz", [1, 4])
def test_sparse_jl_preserves_inner_products(nnz):
    x, y = _pairs(20_000)
    err = {}
    for k in (256, 4096):
        sketch = SparseJL(dim=20_000, k=k, seed=7, nnz=nnz)
        err[k] = _errors(sketch.project, x, y)
        assert err[k].max() < 5 * (2 / k) ** 0.5, (k, err[k].max())
    assert err[4096].mean() < err[256].mean() / 2.5  # ~4x expected
    sketch = SparseJL(dim=20_000, k=256, seed=7, nnz=nnz)
    torch.testing.assert_close(sketch.project(x), sketch.project(x))  # seeded, deterministic
    assert not torch.allclose(sketch.project(x), SparseJL(20_000, 256, seed=8, nnz=nnz).project(x))
    torch.testing.assert_close(sketch.project(2 * x + y), 2 * sketch.project(x) + sketch.project(y))


def test_sparse_jl_chunked_and_validates(monkeypatch):
    monkeypatch.setattr(projections, "CHUNK", 1000)  # many hash chunks over one vector
    x, y = _pairs(5_500)
    assert _errors(SparseJL(5_500, 1024, seed=1).project, x, y).max() < 5 * (2 / 1024) ** 0.5
    with pytest.raises(ValueError):
        SparseJL(5_500, 1024).project(torch.zeros(2, 10))
    with pytest.raises(ValueError):
        SparseJL(10, 100, nnz=3)


def test_factored_linear_equals_dense_kronecker_projection():
    proj = FactoredProjector(k_out=6, k_in=5, seed=0)
    x, g = torch.randn(3, 7, 20), torch.randn(3, 7, 12)
    left, right = proj.matrices("layer", 12, 20)
    dense = torch.einsum("btm,btn->bmn", g, x)
    expected = (left @ dense @ right.T).flatten(1)
    torch.testing.assert_close(proj.project_linear("layer", x, g), expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(FactoredProjector(6, 5, seed=0).matrices("layer", 12, 20)[0], left)


def test_factored_lora_preserves_inner_products():
    m, n, r = 400, 300, 4
    gen = torch.Generator().manual_seed(0)
    ga, gb = torch.randn(60, r, n, generator=gen), torch.randn(60, m, r, generator=gen)
    flat = torch.cat([ga.flatten(1), gb.flatten(1)], 1)
    flat = flat / flat.norm(dim=1, keepdim=True)
    ga, gb = flat[:, : r * n].reshape(60, r, n), flat[:, r * n :].reshape(60, m, r)
    errs = {}
    for k in (16, 256):
        proj = FactoredProjector(k_out=k, k_in=k, seed=3)
        p = proj.project_lora_grads({"mod": (ga, gb)})
        assert p.shape == (60, 2 * r * k)
        errs[k] = ((p[:30] * p[30:]).sum(1) - (flat[:30] * flat[30:]).sum(1)).abs()
        sigma = (2 / k + 2 / k) ** 0.5
        assert errs[k].max() < 5 * sigma, (k, errs[k].max())
    assert errs[256].mean() < errs[16].mean() / 2.5

"""Inner products survive projection within the stated bound.

For unit vectors both sketches are unbiased with Var⟨Px, Py⟩ ≤ σ² (SparseJL: σ² = 2/k; factored
Kronecker Gaussian: σ² ≈ 2/k_in + 2/k_out). With 30 fixed-seed pairs we require every error < 5σ
and the mean error to shrink roughly like k^(-1/2) when k grows 16x.
"""

import pytest
import torch

from curator.ml import projections
from curator.ml.projections import SparseJL


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

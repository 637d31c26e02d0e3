"""Anchor reference artifacts: safetensors round trip with metadata, atomic write, tamper detection."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from curator.errors import InputError
from filters.risk.anchor_reference import load_artifact, save_artifact


def test_artifact_round_trip_and_tamper(tmp_path):
    path = tmp_path / "a" / "ref.safetensors"
    tensors = {"directions": torch.randn(4, 8), "cas": torch.rand(4, dtype=torch.float64)}
    sha = save_artifact(path, tensors, {"model_fingerprint": "abc", "split": {"seed": 0}})
    got, meta = load_artifact(path)
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert meta["curator_sha256"] == sha and meta["model_fingerprint"] == "abc" and meta["split"] == '{"seed": 0}'
    assert not list(path.parent.glob(".*tmp"))  # atomic write left no temp file
    bad = load_file(str(path))
    bad["directions"][0, 0] += 1.0
    save_file(bad, str(path), metadata=meta)  # same metadata (old hash), changed tensor
    with pytest.raises(InputError, match="integrity check") as err:
        load_artifact(path)
    assert str(path) in str(err.value)
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match=str(path)):
        load_artifact(path)

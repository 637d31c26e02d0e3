"""Hidden states and positions: layer-index convention, early exit, masking with padding."""

import pytest
import torch

from curator.ml.chat import collate
from curator.ml.testing import tiny_model
from filters.risk.activations import all_hidden, at, layer_hidden, masked_mean, num_layers, positions
from tests.support import uneven_samples


@pytest.fixture(scope="module")
def tiny3():
    return tiny_model(n_layers=3, seed=1)


def test_layer_index_convention_and_early_exit(tiny3):
    """layer_hidden(ℓ) == output_hidden_states[ℓ] of a full forward (0 = embeddings, L = final norm),
    and blocks after ℓ never run."""
    model, tok = tiny3
    samples = uneven_samples(tok)
    batch = collate(samples, tok.pad_token_id)
    with torch.inference_mode():
        full = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True).hidden_states
        assert len(full) == num_layers(model) + 1
        assert torch.equal(full[0], model.get_input_embeddings()(batch["input_ids"]))
        ran = []
        hooks = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, b in enumerate(model.model.layers)]
        try:
            for ell in range(num_layers(model) + 1):
                ran.clear()
                h = layer_hidden(model, batch, ell)
                assert torch.allclose(h, full[ell].float(), atol=1e-6, rtol=1e-5), ell
                assert ran == list(range(min(ell, num_layers(model)))), (ell, ran)  # early exit
        finally:
            for hk in hooks:
                hk.remove()
        assert all(torch.allclose(a, b) for a, b in zip(all_hidden(model, batch), full))


def test_positions_and_masking_batched_equals_one_by_one(tiny3):
    model, tok = tiny3
    samples = uneven_samples(tok)
    batch = collate(samples, tok.pad_token_id)
    assert len({len(s.input_ids) for s in samples}) > 1 and (batch["attention_mask"] == 0).any()
    pos = positions(samples, batch)
    assert pos.ref.tolist() == [samples[0].prompt_len - 1, samples[1].prompt_len - 1, 0, samples[3].prompt_len - 1]
    assert pos.last.tolist() == [len(s.input_ids) - 1 for s in samples]
    # text-only row: the response mean skips the reference (BOS) token and covers every other token
    assert not pos.response[2, 0] and int(pos.response[2].sum()) == len(samples[2].input_ids) - 1
    assert samples[2].input_ids[0] == tok.bos_token_id
    for ell in (1, 3):
        with torch.inference_mode():
            h = layer_hidden(model, batch, ell)
            feats = [masked_mean(h, pos.response), at(h, pos.ref), at(h, pos.last)]
            for i, s in enumerate(samples):
                one = collate([s], tok.pad_token_id)
                p1 = positions([s], one)
                h1 = layer_hidden(model, one, ell)
                ref = [masked_mean(h1, p1.response), at(h1, p1.ref), at(h1, p1.last)]
                for got, want in zip(feats, ref):
                    assert torch.allclose(got[i], want[0], atol=1e-5), (ell, i)
    # manual response mean for one row
    resp = [t for t, lab in enumerate(samples[1].labels) if lab != -100]
    assert torch.allclose(feats[0][1], h[1, resp].mean(0), atol=1e-6)


def test_masked_mean_of_empty_mask_is_nan():
    h = torch.ones(2, 3, 4)
    out = masked_mean(h, torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool))
    assert torch.equal(out[0], torch.ones(4)) and torch.isnan(out[1]).all()

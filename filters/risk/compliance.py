"""``risk.compliance``: DataShield's forward-only compliance-direction projection shift.

Reference (built once per model + anchor set, ``build_artifacts``): from the training split of
(harmful prompt, compliant answer, refusal) pairs, per layer ℓ = 0..L (``hidden_states[ℓ]``, 0 =
embeddings; see ``filters.risk.activations``)

    v_ℓ   = normalize( mean_compliant h̄_resp,ℓ − mean_refusal h̄_resp,ℓ )
    CAS_ℓ = uᵀS_b u / uᵀS_t u     on per-dimension standardised last-token activations of the
            (prompt, refusal) and (prompt, compliant) sequences, u = normalize(mean difference of the
            raw last-token activations); closed form (``cas``), no d×d matrices.

``layer: auto`` picks ℓ* = argmax CAS over ℓ ≥ 1 (ℓ = 0 is undefined: both sequences end in the same
end-of-turn token). Score, from ONE forward stopped after ℓ*:

    risk_compliance = proj(mean response activation, v) − proj(last prompt token activation, v),
    proj(a, v) = a·v/‖v‖.

Text-only rows (no prompt): the first token (BOS) replaces the last prompt token and the response
mean runs over the remaining tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import torch

from curator.errors import InputError
from curator.ml.chat import encode_sample
from curator.progress import progress_bar
from curator.report_sections import score_sections
from filters.risk.activations import all_hidden, at, layer_hidden, masked_mean, num_layers, positions
from filters.risk.anchor_reference import AnchorReferenceStage


@dataclass(frozen=True)
class ComplianceParams:
    layer: int | Literal["auto"] = "auto"
    anchors: str = "default"  # or a file with columns prompt, compliant, refusal
    anchor_test_fraction: float = 0.3  # held out from the reference (validation only)
    anchor_seed: int = 0
    batch_size: int = 8
    max_length: int = 1024

    def validate(self) -> None:
        if isinstance(self.layer, int) and self.layer < 0:
            raise ValueError(f"layer: expected >= 0 or 'auto', got {self.layer}")
        if self.batch_size < 1 or self.max_length < 8:
            raise ValueError("batch_size must be >= 1 and max_length >= 8")
        if not 0.0 < self.anchor_test_fraction < 1.0:
            raise ValueError(f"anchor_test_fraction must be in (0, 1), got {self.anchor_test_fraction}")


def cas(a: torch.Tensor, b: torch.Tensor) -> float:
    """Compliance-aware score of two classes of activations ([n_a, d], [n_b, d]); NaN if undefined."""
    diff = b.mean(0) - a.mean(0)
    if not float(diff.norm()) > 0:
        return float("nan")
    u = diff / diff.norm()
    acts = torch.cat([a, b]).double()
    std = acts.std(0)
    z = (acts - acts.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
    proj = z @ u.double()  # z is centred, so μ = 0
    between = len(a) * proj[: len(a)].mean() ** 2 + len(b) * proj[len(a) :].mean() ** 2
    total = (proj**2).sum()
    return float(between / total) if float(total) > 0 else float("nan")


class ComplianceStage(AnchorReferenceStage):
    name = "risk.compliance"
    version = 1
    Params = ComplianceParams
    provides = ("risk_compliance",)
    reference_name = "compliance"

    def compute_reference(self, train: pa.Table) -> tuple[dict[str, torch.Tensor], dict]:
        """Compliance vectors and CAS per layer, and ℓ* for ``auto``."""
        loaded = self.load()
        feats = {}
        for kind in ("compliant", "refusal"):
            rows = train.select(["prompt", kind]).to_pylist()
            samples = [encode_sample(loaded.tokenizer, r["prompt"], r[kind], max_length=self.params.max_length)
                       for r in rows]
            resp, last = [], []
            size = self.params.batch_size
            with progress_bar(f"{self.name}: reference ({kind})", len(samples), self.context.quiet) as advance:
                for k in range(0, len(samples), size):
                    chunk = samples[k : k + size]
                    batch = self.collate(chunk)
                    pos = positions(chunk, batch)
                    with torch.inference_mode():
                        hs = all_hidden(loaded.model, batch)
                    resp.append(torch.stack([masked_mean(h, pos.response) for h in hs], 1))  # [b, L+1, d]
                    last.append(torch.stack([at(h, pos.last) for h in hs], 1))
                    advance(len(chunk))
            feats[kind] = (torch.cat(resp).cpu(), torch.cat(last).cpu())
        diff = feats["compliant"][0].mean(0) - feats["refusal"][0].mean(0)  # [L+1, d]
        directions = diff / diff.norm(dim=1, keepdim=True)
        scores = torch.tensor([cas(feats["refusal"][1][:, ell], feats["compliant"][1][:, ell])
                               for ell in range(directions.shape[0])], dtype=torch.float64)
        best = int(torch.nan_to_num(scores[1:], nan=-1.0).argmax()) + 1
        meta = {"cas_layer": best, "cas": [round(float(x), 6) for x in scores],
                "layer_convention": "row l = hidden_states[l]; 0 = embeddings, L = final norm output"}
        return {"directions": directions, "cas": scores}, meta

    def report_sections(self) -> tuple:
        """Risk vs sample length and the riskiest samples (``curator.report_sections``)."""
        return score_sections(self.provided_columns(), top="Top-risk", length="Risk-length")

    def setup(self) -> None:
        tensors, meta = self.reference()
        self.layer = json.loads(meta["cas_layer"]) if self.params.layer == "auto" else self.params.layer
        if self.layer > num_layers(self.load().model):
            raise InputError(f"risk.compliance: layer {self.layer} > the model's {num_layers(self.load().model)}")
        self.direction = tensors["directions"][self.layer].to(self.load().device)

    def score_chunk(self, samples, batch) -> dict[str, list[float]]:
        with torch.inference_mode():
            h = layer_hidden(self.load().model, batch, self.layer)
        pos = positions(samples, batch)
        v = self.direction / self.direction.norm()
        score = masked_mean(h, pos.response.to(h.device)) @ v - at(h, pos.ref) @ v
        return {"risk_compliance": score.double().cpu().tolist()}

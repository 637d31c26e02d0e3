"""``risk.anchor_similarity``: He, Xia & Henderson (2024) representation and gradient matching with
bidirectional anchors (harmful = harmful prompt + compliant answer, safe = the same prompts + refusal,
from the training split of the paired anchor set).

- ``rep``:  f(z) = ``hidden_states[L]`` (final-norm output) at the last non-pad token of prompt+response;
  ``risk_rep = topn_mean_j cos(f(z), f(h_j)) − topn_mean_j cos(f(z), f(s_j))``.
- ``grad``: ĝ = g/‖g‖ of the response-only token-mean loss;
  ``risk_grad = ⟨ĝ(z), ḡ_harmful⟩ − ⟨ĝ(z), ḡ_safe⟩``, ḡ = mean of the anchors' ĝ, each anchor's loss
  over only its first ``anchor_response_tokens`` (10) response tokens, as in the paper.

Mapping of the paper's weights (+1, −1, −1) over one harmful and two safe anchor sets: one safe set
(refusals), weight −1. Departure from the paper's full-parameter gradients: g is the gradient of a
seeded rank-r LoRA at its standard init (B = 0) on every block Linear, i.e. ∇_B = s·∇_W·Aᵀ, a random
sketch of each full weight gradient; each module's block is rescaled by √(3n/r)/s so that
E⟨·,·⟩ equals the full-weight inner product (A ~ U(±1/√n): E[AᵀA] = r/(3n)·I). Embeddings, norms and
the LM head are not included. ``proj_dim > 0`` further applies a seeded sparse JL projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import pyarrow as pa
import torch

from curator.ml.chat import encode_sample
from curator.ml.gradients import per_sample_lora_grads
from curator.ml.lora import LoRAConfig, attach_lora, lora_modules
from curator.ml.models import LoadedModel, load_model
from curator.ml.projections import SparseJL
from curator.progress import progress_bar
from curator.report_sections import score_sections
from filters.risk.activations import at, layer_hidden, num_layers, positions
from filters.risk.anchor_reference import AnchorReferenceStage

COLUMNS = {"rep": "risk_rep", "grad": "risk_grad"}


@dataclass(frozen=True)
class AnchorSimilarityParams:
    methods: tuple[Literal["rep", "grad"], ...] = ("rep", "grad")
    top_n: int = 1  # rep: mean of the n largest cosines (1 = max, the paper's default)
    anchors: str = "default"  # or a file with columns prompt, compliant, refusal
    anchor_test_fraction: float = 0.3
    anchor_seed: int = 0
    anchor_response_tokens: int = 10
    lora_rank: int = 8
    proj_dim: int = 0  # 0 = exact sketched gradients; > 0 = sparse JL to this many dims
    seed: int = 0
    batch_size: int = 8
    max_length: int = 1024

    def validate(self) -> None:
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: give 'rep' and/or 'grad' once each, got {list(self.methods)}")
        if min(self.top_n, self.batch_size, self.lora_rank, self.anchor_response_tokens) < 1 or self.proj_dim < 0:
            raise ValueError("top_n, batch_size, lora_rank, anchor_response_tokens must be >= 1; proj_dim >= 0")
        if self.max_length < 8 or not 0.0 < self.anchor_test_fraction < 1.0:
            raise ValueError("max_length must be >= 8 and anchor_test_fraction in (0, 1)")


class AnchorSimilarityStage(AnchorReferenceStage):
    name = "risk.anchor_similarity"
    version = 1
    Params = AnchorSimilarityParams
    provides = ("risk_rep", "risk_grad")
    reference_name = "anchor_similarity"

    def provided_columns(self) -> tuple[str, ...]:
        return tuple(COLUMNS[m] for m in self.params.methods)

    def reference_params(self) -> dict:
        p = self.params
        return {"anchor_response_tokens": p.anchor_response_tokens, "lora_rank": p.lora_rank,
                "proj_dim": p.proj_dim, "seed": p.seed}

    def open_model(self) -> LoadedModel:
        """A private copy with a seeded zero-B LoRA attached (outputs equal the base model's)."""
        loaded = load_model(self.model_spec, self.context.device, self.context.dtype, cached=False)
        attach_lora(loaded.model, LoRAConfig(r=self.params.lora_rank, alpha=float(self.params.lora_rank)),
                    seed=self.params.seed)
        return loaded

    # -- features ----------------------------------------------------------------------------------
    def rep_features(self, samples, batch) -> torch.Tensor:
        model = self.load().model
        with torch.inference_mode():
            h = layer_hidden(model, batch, num_layers(model))
        f = at(h, positions(samples, batch).last)
        return f / f.norm(dim=1, keepdim=True)

    def grad_features(self, samples, batch) -> torch.Tensor:
        """Normalised sketched gradients [b, D] (see module docstring)."""
        model = self.load().model
        _, grads = per_sample_lora_grads(model, batch, with_a=False)  # features use ∇B only
        modules = lora_modules(model)
        parts = []
        for name in sorted(grads):
            m = modules[name]
            scale = math.sqrt(3 * m.base.in_features / self.params.lora_rank) / m.scaling
            parts.append(grads[name][1].flatten(1) * scale)
        g = torch.cat(parts, dim=1)
        if self.params.proj_dim:
            g = SparseJL(g.shape[1], self.params.proj_dim, seed=self.params.seed).project(g)
        return g / g.norm(dim=1, keepdim=True)

    # -- reference -----------------------------------------------------------------------------------
    def _anchor_features(self, texts: list[tuple[str, str]], grad: bool, desc: str) -> torch.Tensor:
        tok, p = self.load().tokenizer, self.params
        samples = [encode_sample(tok, q, a, max_length=p.max_length) for q, a in texts]
        if grad:  # only the first k response tokens carry loss (and later tokens cannot affect them)
            k = p.anchor_response_tokens
            samples = [replace(s, input_ids=s.input_ids[: s.prompt_len + k], labels=s.labels[: s.prompt_len + k],
                               response_len=min(s.response_len, k)) for s in samples]
        out = []
        with progress_bar(desc, len(samples), self.context.quiet) as advance:
            for i in range(0, len(samples), p.batch_size):
                chunk = samples[i : i + p.batch_size]
                batch = self.collate(chunk)
                out.append((self.grad_features if grad else self.rep_features)(chunk, batch).cpu())
                advance(len(chunk))
        return torch.cat(out)

    def compute_reference(self, train: pa.Table) -> tuple[dict[str, torch.Tensor], dict]:
        """Anchor representations and mean normalised anchor gradients, harmful and safe."""
        tensors = {}
        for kind, reply in (("harmful", "compliant"), ("safe", "refusal")):
            texts = list(zip(train.column("prompt").to_pylist(), train.column(reply).to_pylist()))
            tensors[f"rep_{kind}"] = self._anchor_features(texts, False, f"{self.name}: {kind} anchors (rep)")
            grads = self._anchor_features(texts, True, f"{self.name}: {kind} anchors (grad)")
            tensors[f"grad_{kind}"] = grads.mean(0)
        return tensors, {"harmful_anchor": "prompt + compliant answer", "safe_anchor": "prompt + refusal (weight -1)"}

    def report_sections(self) -> tuple:
        """Risk vs sample length and the riskiest samples (``curator.report_sections``)."""
        return score_sections(self.provided_columns(), top="Top-risk", length="Risk-length")

    def setup(self) -> None:
        tensors, _ = self.reference()
        device = self.load().device
        self.ref = {k: v.to(device) for k, v in tensors.items()}

    def score_chunk(self, samples, batch) -> dict[str, list[float]]:
        out = {}
        if "rep" in self.params.methods:
            f = self.rep_features(samples, batch)

            def top(anchors: torch.Tensor) -> torch.Tensor:
                k = min(self.params.top_n, anchors.shape[0])
                return (f @ anchors.T).topk(k, dim=1).values.mean(1)

            out["risk_rep"] = (top(self.ref["rep_harmful"]) - top(self.ref["rep_safe"])).double().cpu().tolist()
        if "grad" in self.params.methods:
            g = self.grad_features(samples, batch)
            score = g @ self.ref["grad_harmful"] - g @ self.ref["grad_safe"]
            out["risk_grad"] = score.double().cpu().tolist()
        return out


"""``risk.sqsd``: safety-degradation risk as a projection of each sample's one-step LoRA update (SQSD).

Per LoRA module m, sample i's update at LoRA state (A, B) is ``ΔW = −(∇B·A + B·∇A)`` (η = 1) and

    risk_sqsd_danger = Σ_m metric(ΔW at the initial state, D_danger,m)
    risk_sqsd_safety = Σ_m metric(ΔW at the safety state (scaling = safety_scaling), D_safety,m)
    risk_sqsd        = risk_sqsd_danger − risk_sqsd_safety

``risk_sqsd_tokens`` is the number of response tokens scored: a sample longer than ``max_length`` keeps
its prompt's end and its response's opening, and loses the response's end (``curator.ml.chat.encode_sample``).
The default ``method="mean_update"`` takes the directions as the mean one-step anchor updates at a fresh LoRA
(the first step of the paper's trained task vectors, minutes on a CPU); ``method="lora"`` trains them.
``mode="shared_state"`` takes both projections from one pass at the initial state (half the cost).
``base_compute="bfloat16"`` runs the frozen base model in bf16 (mixed precision; LoRA factors, gradients
and metrics stay float32): faster on CPUs with bf16 matmuls, scores approximate the float32 ones
(agreement measured by ``benchmarks/perf/risk.py``).
Per-sample gradients come from one batched forward/backward (``curator.ml.gradients``), metrics from
low-rank Gram identities (``filters.risk.lowrank``). Batching, per-sample cache and retries:
``filters.base.ModelScoreStage``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch

from curator.errors import RecipeError
from curator.ml.gradients import per_sample_lora_grads
from curator.ml.lora import attach_lora, lora_modules, set_factors
from curator.ml.models import LoadedModel, load_model, model_inputs
from curator.ml.precision import warn_if_slow_bfloat16
from curator.report_sections import score_sections
from filters.base import ModelScoreStage
from filters.risk import directions as dirs
from filters.risk.lowrank import LowRankDirection, module_scores

COLUMNS = ("risk_sqsd", "risk_sqsd_danger", "risk_sqsd_safety", "risk_sqsd_tokens")


@dataclass(frozen=True)
class SQSDParams:
    directions: str = "default"  # or a directions directory (or a file inside one)
    method: Literal["lora", "mean_update"] = "mean_update"
    safety_scaling: float = 1.0
    mode: Literal["exact", "shared_state"] = "exact"
    batch_size: int = 8
    max_length: int = 512
    metric: Literal["cosine", "dot", "projection"] = "cosine"
    base_compute: Literal["model", "bfloat16"] = "model"  # bfloat16: frozen base matmuls in bf16, LoRA in fp32

    def validate(self) -> None:
        if self.batch_size < 1 or self.max_length < 8 or not self.safety_scaling > 0:
            raise ValueError("batch_size must be >= 1, max_length >= 8 and safety_scaling > 0")


@functools.cache
def _default_record(method: str) -> tuple[dirs.DirectionConfig, dict]:
    cfg = dirs.DirectionConfig(method=method)
    return cfg, dirs.default_anchor_data(cfg).record


class SQSDStage(ModelScoreStage):
    name = "risk.sqsd"
    version = 2  # 2: risk_sqsd_tokens; long responses cut at their end; directions from 1024-token anchors
    Params = SQSDParams
    provides = COLUMNS
    count_columns = ("risk_sqsd_tokens",)  # response tokens scored (a long response is cut at its end)
    chunks_per_call = 8  # engine batches of 8 chunks, as before the shared base: same chunks, same scores

    def fingerprint_inputs(self) -> dict:
        fp = self.model_spec.fingerprint
        if self.params.directions == "default":
            cfg, record = _default_record(self.params.method)
            return {**model_inputs(self.model_spec), "directions_key": dirs.build_key(fp, cfg, record)}
        return {**model_inputs(self.model_spec), "directions_sha256": dirs.directions_sha256(self.params.directions)}

    def open_model(self) -> LoadedModel:
        """A private copy: ``setup`` attaches the directions' LoRA."""
        return load_model(self.model_spec, self.context.device, self.context.dtype, cached=False)

    def build_artifacts(self, force: bool = False) -> dict[str, str]:
        """Build (default) or verify (a given path) the directions; name -> file path."""
        if self.params.directions == "default":
            lm = self.load()
            cfg, _ = _default_record(self.params.method)
            root = dirs.ensure_default(lm.model, lm.tokenizer, lm.spec.fingerprint, cfg, force, not self.context.quiet)
        else:
            root = dirs.load_directions(self.params.directions, self.model_spec.fingerprint).root
        return {k: str(root / f"{k}.safetensors") for k in dirs.ADAPTERS}

    def report_sections(self) -> tuple:
        """Risk vs sample length and the riskiest samples (``curator.report_sections``)."""
        return score_sections(("risk_sqsd",), top="Top-risk", length="Risk-length")

    def setup(self) -> None:
        lm = self.load()
        root = dirs.resolve_root(self.build_artifacts()["danger"])
        d = self.directions = dirs.load_directions(root, lm.spec.fingerprint)
        if d.method != self.params.method:
            raise RecipeError(f"risk.sqsd: directions in {root} use method {d.method!r}, params say "
                              f"{self.params.method!r}; make them agree")
        attach_lora(lm.model, d.lora)
        self.dir_danger = {n: LowRankDirection.from_factors(a, b) for n, (a, b) in d.danger.items()}
        self.dir_safety = {n: LowRankDirection.from_factors(a, b) for n, (a, b) in d.safety.items()}
        if self.params.base_compute == "bfloat16":
            warn_if_slow_bfloat16("risk.sqsd base_compute: bfloat16", str(lm.device))

    def _passes(self) -> list[tuple[dict, float, list[str]]]:
        """(state factors, scaling, which directions) per forward/backward pass."""
        d, p = self.directions, self.params
        if p.mode == "shared_state" or d.safety_state == "initial":
            return [(d.initial, d.initial_scaling, ["danger", "safety"])]
        return [(d.initial, d.initial_scaling, ["danger"]), (d.safety, p.safety_scaling, ["safety"])]

    def score_chunk(self, samples, batch) -> dict[str, list[float]]:
        """Per sample: Σ_m metric over modules at each pass's state, for danger and safety; risk = their difference."""
        model = self.load().model
        mods = lora_modules(model)
        compute = torch.bfloat16 if self.params.base_compute == "bfloat16" else None
        parts = {}
        for state, scaling, which in self._passes():
            set_factors(model, state, scaling)
            _, grads = per_sample_lora_grads(model, batch, compute_dtype=compute)
            lookups = [self.dir_danger if w == "danger" else self.dir_safety for w in which]
            totals = [torch.zeros(len(samples), dtype=torch.float64) for _ in which]
            for name, (g_a, g_b) in grads.items():
                vals = module_scores(mods[name].lora_A.detach(), mods[name].lora_B.detach(), g_a, g_b,
                                     [lk[name] for lk in lookups], self.params.metric)
                for t, v in zip(totals, vals):
                    t += v.double()
            parts.update(zip(which, totals))
        danger, safety = parts["danger"].tolist(), parts["safety"].tolist()
        return {"risk_sqsd": [a - b for a, b in zip(danger, safety)], "risk_sqsd_danger": danger,
                "risk_sqsd_safety": safety, "risk_sqsd_tokens": [s.response_len for s in samples]}

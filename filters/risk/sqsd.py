"""``risk.sqsd``: safety-degradation risk as a projection of each sample's one-step LoRA update (SQSD).

Per LoRA module m, sample i's update at LoRA state (A, B) is ``ΔW = −(∇B·A + B·∇A)`` (η = 1) and

    risk_sqsd_danger = Σ_m metric(ΔW at the initial state, D_danger,m)
    risk_sqsd_safety = Σ_m metric(ΔW at the safety state (scaling = safety_scaling), D_safety,m)
    risk_sqsd        = risk_sqsd_danger − risk_sqsd_safety

``mode="shared_state"`` takes both projections from one pass at the initial state (half the cost).
``base_compute="bfloat16"`` runs the frozen base model in bf16 (mixed precision; LoRA factors, gradients
and metrics stay float32): faster on CPUs with bf16 matmuls, scores approximate the float32 ones
(agreement measured by ``benchmarks/perf/risk.py``).
Per-sample gradients come from one batched forward/backward (``curator.ml.gradients``), metrics from
low-rank Gram identities (``filters.risk.lowrank``). Scores are cached per ``sample_id`` under the
stage's cache dir (Parquet parts), so a killed shard resumes where it stopped.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from curator.errors import RecipeError
from curator.io import write_parquet
from curator.ml.chat import collate, encode_sample
from curator.ml.gradients import per_sample_lora_grads
from curator.ml.lora import attach_lora, lora_modules, set_factors
from curator.ml.models import load_model, resolve_model
from curator.ml.precision import warn_if_slow_bfloat16
from curator.progress import progress_bar
from curator.report_sections import score_sections
from curator.stage import FLAG_COLUMN, Resources, Stage
from filters.risk import directions as dirs
from filters.risk.lowrank import LowRankDirection, module_scores

COLUMNS = ("risk_sqsd", "risk_sqsd_danger", "risk_sqsd_safety")
CACHE_SCHEMA = pa.schema([("sample_id", pa.string())] + [(c, pa.float64()) for c in COLUMNS]
                         + [(FLAG_COLUMN, pa.string())])


@dataclass(frozen=True)
class SQSDParams:
    directions: str = "default"  # or a directions directory (or a file inside one)
    method: Literal["lora", "mean_update"] = "lora"
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


class SQSDStage(Stage):
    name = "risk.sqsd"
    version = 1
    kind = "score"
    Params = SQSDParams
    requires = ("sample_id", "prompt", "response")
    provides = COLUMNS
    uses_model = True

    def resources(self) -> Resources:
        return Resources(batch_size=8 * self.params.batch_size)  # length-sorted into micro-batches

    def fingerprint_inputs(self) -> dict:
        fp = resolve_model(self.context.model).fingerprint
        if self.params.directions == "default":
            cfg, record = _default_record(self.params.method)
            return {"model": fp, "directions_key": dirs.build_key(fp, cfg, record)}
        return {"model": fp, "directions_sha256": dirs.directions_sha256(self.params.directions)}

    def _load_model(self):
        if getattr(self, "_lm", None) is None:
            self._lm = load_model(self.context.model, self.context.device, self.context.dtype, cached=False)
        return self._lm

    def build_artifacts(self, force: bool = False) -> dict[str, str]:
        """Build (default) or verify (a given path) the directions; name -> file path."""
        if self.params.directions == "default":
            lm = self._load_model()
            cfg, _ = _default_record(self.params.method)
            root = dirs.ensure_default(lm.model, lm.tokenizer, lm.spec.fingerprint, cfg, force, not self.context.quiet)
        else:
            root = dirs.load_directions(self.params.directions, resolve_model(self.context.model).fingerprint).root
        return {k: str(root / f"{k}.safetensors") for k in dirs.ADAPTERS}

    def report_sections(self) -> tuple:
        """Risk vs sample length and the riskiest samples (``curator.report_sections``)."""
        return score_sections(("risk_sqsd",), top="Top-risk", length="Risk-length")

    def setup(self) -> None:
        lm = self._load_model()
        root = dirs.resolve_root(self.build_artifacts()["danger"])
        d = self.directions = dirs.load_directions(root, lm.spec.fingerprint)
        if d.method != self.params.method:
            raise RecipeError(f"risk.sqsd: directions in {root} use method {d.method!r}, params say "
                              f"{self.params.method!r}; make them agree")
        attach_lora(lm.model, d.lora)
        self.dir_danger = {n: LowRankDirection.from_factors(a, b) for n, (a, b) in d.danger.items()}
        self.dir_safety = {n: LowRankDirection.from_factors(a, b) for n, (a, b) in d.safety.items()}
        self.cache_dir = self.context.cache_dir / "scores"
        parts = sorted(self.cache_dir.glob("part-*.parquet")) if self.cache_dir.is_dir() else []
        self.cache = {r["sample_id"]: r for part in parts for r in pq.read_table(part).to_pylist()}

    def _passes(self) -> list[tuple[dict, float, list[str]]]:
        """(state factors, scaling, which directions) per forward/backward pass."""
        d, p = self.directions, self.params
        if p.mode == "shared_state" or d.safety_state == "initial":
            return [(d.initial, d.initial_scaling, ["danger", "safety"])]
        return [(d.initial, d.initial_scaling, ["danger"]), (d.safety, p.safety_scaling, ["safety"])]

    def score_encoded(self, samples: list) -> dict[str, torch.Tensor]:
        """``{danger, safety}`` -> [b] sums of per-module metrics for one micro-batch."""
        model, tok = self._lm.model, self._lm.tokenizer
        batch = collate(samples, tok.pad_token_id)
        mods = lora_modules(model)
        out = {}
        compute = torch.bfloat16 if self.params.base_compute == "bfloat16" else None
        if compute is not None:
            warn_if_slow_bfloat16("risk.sqsd base_compute: bfloat16", str(self._lm.device))
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
            out.update(zip(which, totals))
        return out

    def _score_rows(self, ids: list[str], encoded: list) -> list[dict]:
        rows, order = [], sorted(range(len(ids)), key=lambda i: len(encoded[i].input_ids))
        bs = self.params.batch_size
        with progress_bar("risk.sqsd", len(ids), self.context.quiet) as advance:
            for s in range(0, len(order), bs):
                idx = [i for i in order[s:s + bs] if encoded[i].response_len > 0]
                rows += [{"sample_id": ids[i], "risk_sqsd": None, "risk_sqsd_danger": None, "risk_sqsd_safety": None,
                          FLAG_COLUMN: None}  # prompt-only rows (safety prompts for hardness): nothing to score
                         for i in order[s:s + bs] if encoded[i].response_len == 0]
                if idx:
                    rows += self._score_chunk([ids[i] for i in idx], [encoded[i] for i in idx])
                advance(len(order[s:s + bs]))
        return rows

    def _score_chunk(self, ids: list[str], samples: list) -> list[dict]:
        """Score a micro-batch; if it fails (e.g. out of memory), retry one by one and flag what still fails."""
        try:
            scores = self.score_encoded(samples)
        except RuntimeError as exc:
            if len(samples) == 1:
                return [self._row(ids[0], None, None, f"SQSD scoring failed: {type(exc).__name__}: {exc}"[:300])]
            return [r for k in range(len(samples)) for r in self._score_chunk(ids[k:k + 1], samples[k:k + 1])]
        return [self._row(sid, float(scores["danger"][k]), float(scores["safety"][k])) for k, sid in enumerate(ids)]

    @staticmethod
    def _row(sid: str, danger: float | None, safety: float | None, reason: str | None = None) -> dict:
        risk = None if danger is None else danger - safety
        if reason is None and not all(map(lambda v: v == v and abs(v) != float("inf"), (danger, safety, risk))):
            reason = "non-finite SQSD score (zero or overflowing gradient)"
        if reason is not None:
            danger = safety = risk = None
        return {"sample_id": sid, "risk_sqsd": risk, "risk_sqsd_danger": danger, "risk_sqsd_safety": safety,
                FLAG_COLUMN: reason}

    def process_batch(self, batch: pa.RecordBatch) -> pa.Table:
        ids = batch.column("sample_id").to_pylist()
        todo = [i for i, sid in enumerate(ids) if sid not in self.cache]
        if todo:
            cols = {c: batch.column(c).to_pylist() if c in batch.schema.names else [None] * len(ids)
                    for c in ("prompt", "response", "messages")}
            encoded = [encode_sample(self._lm.tokenizer, cols["prompt"][i], cols["response"][i],
                                     cols["messages"][i], self.params.max_length) for i in todo]
            new = self._score_rows([ids[i] for i in todo], encoded)
            write_parquet(pa.Table.from_pylist(new, schema=CACHE_SCHEMA),
                          self.cache_dir / f"part-{os.getpid()}-{time.time_ns()}.parquet")
            self.cache.update((r["sample_id"], r) for r in new)
        table = pa.Table.from_pylist([self.cache[sid] for sid in ids], schema=CACHE_SCHEMA)
        return table.set_column(0, "sample_id", pc.cast(batch.column("sample_id"), pa.string()))

    def teardown(self) -> None:
        self._lm = None

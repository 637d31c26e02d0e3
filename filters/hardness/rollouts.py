"""Self-rollouts: batched sampling with per-(prompt, j) seeds, and content-addressed Parquet stores.

Sampling (backend ``transformers``): our own decode loop with a KV cache; the sampling parameters
(temperature, top_p, top_k, max_new_tokens) are always the ones passed in -- the model's
``generation_config.json`` is never read. Row (prompt p, rollout j) draws its uniforms from its own
``numpy`` stream seeded by ``rollout_seed(seed, p, j)`` and picks the token by inverse CDF over the
filtered distribution. Rows are batched per prompt in fixed blocks (j in [b·block, (b+1)·block), one
shared prefill, no padding): batching different prompts together (left padding) moves float32 logits by
~3e-5 on SmolLM2, enough to flip a sampled token now and then, so a block never shares a forward pass
with another prompt and rollout j is bit-identical whatever the batch composition and whatever k
(raising k from 8 to 64 only generates blocks 1..7). Backend ``vllm`` (optional, GPU) uses the same
parameters with one seeded request per row (reproducible statistically, not bitwise). Prompts go
through ``curator.ml.chat.render_generation_prompt``.

Stores (``RUN_DIR/cache/rollouts``, ``RUN_DIR/cache/verdicts``; shared by every stage fingerprint):
``rollout_id = H(group_id, j)`` with ``group_id = H(model fingerprint, rendered prompt ids, generation
params)``; ``verdict_key = H(judge fingerprint, pair_key)`` with ``pair_key = H(prompt, rollout text)``.
Rows are appended as atomically written part files and never rewritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.errors import RecipeError
from curator.io import write_parquet
from filters.hardness.judges import EnsembleJudge, Judge, Verdict, sha256_of

BACKENDS = ("transformers", "vllm")
ROLLOUT_SCHEMA = pa.schema([
    ("rollout_id", pa.string()), ("group_id", pa.string()), ("pair_key", pa.string()), ("prompt", pa.string()),
    ("j", pa.int64()), ("text", pa.string()), ("finish_reason", pa.string()), ("n_tokens", pa.int64()),
    ("seed", pa.int64()), ("model_fp", pa.string()), ("gen_params", pa.string())])
VERDICT_SCHEMA = pa.schema([
    ("verdict_key", pa.string()), ("pair_key", pa.string()), ("judge", pa.string()), ("judge_fp", pa.string()),
    ("harmful", pa.bool_()), ("refusal", pa.bool_()), ("raw", pa.string())])


@dataclass(frozen=True)
class GenParams:
    """Everything that fixes a rollout besides the model and prompt (``top_k = 0``: off)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    seed: int = 0
    backend: str = "transformers"
    dtype: str = "float32"
    block: int = 8  # rollouts j in [b*block, (b+1)*block) of a prompt are generated together

    def __post_init__(self):
        if (self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1
                or self.block < 1):
            raise RecipeError(f"bad sampling parameters {self}: need temperature >= 0, 0 < top_p <= 1, "
                              "top_k >= 0, max_new_tokens >= 1, block >= 1")
        if self.backend not in BACKENDS:
            raise RecipeError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def check_backend(backend: str) -> None:
    """Fail before any model loads when ``vllm`` is asked for but not installed."""
    import importlib.util

    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RecipeError("backend 'vllm' needs the vllm package and a GPU (`pip install vllm`); "
                          "or use backend: transformers")


def rollout_seed(seed: int, group_id: str, j: int) -> int:
    """63-bit seed of rollout j of a prompt: sha256(seed, group, j)."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}\0{group_id}\0{int(j)}".encode()).digest()[:8], "big") >> 1


def pair_key(prompt: str, text: str) -> str:
    return sha256_of("pair", prompt, text)


@dataclass(frozen=True)
class Sample:
    text: str
    finish_reason: str  # "stop" (end-of-turn / eos emitted) or "length"
    n_tokens: int  # generated tokens, the stop token excluded


def choose_tokens(logits, u: np.ndarray, gen: GenParams):
    """Next token per row: temperature, top-k, top-p (smallest set with mass >= top_p), then inverse CDF
    at ``u`` (one uniform per row) over token-id order; temperature 0 is greedy."""
    import torch

    if gen.temperature == 0:
        return logits.argmax(-1)
    x = logits.double() / gen.temperature
    if gen.top_k:
        kth = torch.topk(x, min(gen.top_k, x.shape[-1]), dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    p = torch.softmax(x, dim=-1)
    if gen.top_p < 1.0:
        ps, idx = torch.sort(p, dim=-1, descending=True, stable=True)
        drop = (ps.cumsum(-1) - ps) >= gen.top_p
        p = p.scatter(-1, idx, ps.masked_fill(drop, 0.0))
    c = p.cumsum(-1)
    v = torch.as_tensor(u, dtype=c.dtype, device=c.device).unsqueeze(-1) * c[:, -1:]
    return torch.searchsorted(c, v, right=True).squeeze(-1).clamp(max=c.shape[-1] - 1)


class TransformersSampler:
    """Decode loop over a loaded causal LM: one block = rows of ONE prompt (shared prefill, KV cache
    expanded to the block, finished rows pruned). A block's rows never share a forward pass with other
    prompts, so its output is bit-identical however the caller groups prompts (no padding, fixed shapes)."""

    def __init__(self, model, tokenizer, device: str = "cpu"):
        from curator.ml.chat import end_of_turn_id

        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.stop_ids = {end_of_turn_id(tokenizer)} | ({tokenizer.eos_token_id} - {None})
        self.n_rows = 0  # rows generated so far (tests count generation through this)

    def sample(self, blocks: Sequence[tuple[list[int], list[int]]], gen: GenParams) -> list[list[Sample]]:
        """``blocks`` = (prompt token ids, one seed per row); returns the samples per block."""
        out = [self._block(ids, seeds, gen) for ids, seeds in blocks]
        self.n_rows += sum(len(s) for _, s in blocks)
        return out

    def _block(self, prompt: list[int], seeds: list[int], gen: GenParams) -> list[Sample]:
        import torch
        from transformers import DynamicCache

        b, steps, n = len(seeds), gen.max_new_tokens, len(prompt)
        uniforms = np.stack([np.random.default_rng(seed).random(steps) for seed in seeds])
        cache, alive = DynamicCache(), list(range(b))
        tokens: list[list[int]] = [[] for _ in range(b)]
        finish = ["length"] * b
        with torch.inference_mode():
            ids = torch.tensor([prompt], device=self.device)
            logits = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
            logits = logits.expand(b, -1)
            cache.batch_repeat_interleave(b)
            for t in range(steps):
                tok = choose_tokens(logits.float(), uniforms[alive, t], gen).tolist()
                keep = []
                for r, (row, tk) in enumerate(zip(alive, tok)):
                    if tk in self.stop_ids:
                        finish[row] = "stop"
                    else:
                        tokens[row].append(tk)
                        keep.append(r)
                if not keep or t == steps - 1:
                    break
                if len(keep) < len(alive):
                    cache.batch_select_indices(torch.tensor(keep, device=self.device))
                    alive, tok = [alive[r] for r in keep], [tok[r] for r in keep]
                step = torch.tensor(tok, device=self.device).unsqueeze(-1)
                pos = torch.full((len(alive), 1), n + t, device=self.device)
                logits = self.model(input_ids=step, position_ids=pos, past_key_values=cache,
                                    use_cache=True).logits[:, -1, :]
        return [Sample(self.tokenizer.decode(tk, skip_special_tokens=True), f, len(tk)) for tk, f in zip(tokens, finish)]


class VLLMSampler:
    """vLLM engine (GPU) with one request per row: ``SamplingParams(seed=row seed, ...)``."""

    def __init__(self, model_path: str | Path, tokenizer, dtype: str = "bfloat16"):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise RecipeError("hardness backend 'vllm' needs the vllm package (GPU); install it with "
                              "`pip install vllm`, or use backend: transformers") from exc
        # Half the GPU: guard-model judges load in the same process after the rollouts of each batch.
        self.llm = LLM(model=str(model_path), dtype=dtype, seed=0, enforce_eager=True, trust_remote_code=False,
                       gpu_memory_utilization=0.5)
        self.tokenizer = tokenizer
        self.n_rows = 0

    def sample(self, blocks: Sequence[tuple[list[int], list[int]]], gen: GenParams) -> list[list[Sample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        rows = [(ids, seed) for ids, seeds in blocks for seed in seeds]
        params = [SamplingParams(n=1, temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or -1,
                                 max_tokens=gen.max_new_tokens, seed=seed) for _, seed in rows]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p, _ in rows], params, use_tqdm=False)
        self.n_rows += len(rows)
        flat = iter([Sample(o.outputs[0].text, "stop" if o.outputs[0].finish_reason == "stop" else "length",
                            len(o.outputs[0].token_ids)) for o in outs])
        return [[next(flat) for _ in seeds] for _, seeds in blocks]


class PartStore:
    """Append-only keyed rows in ``directory/part-*.parquet`` (atomic writes; several writers are safe)."""

    def __init__(self, directory: Path, key: str, schema: pa.Schema):
        self.directory, self.key, self.schema = Path(directory), key, schema
        self._index: dict[str, str] = {}  # key -> part file name
        self._seen: set[str] = set()

    def _refresh(self) -> None:
        for part in sorted(self.directory.glob("part-*.parquet")):
            if part.name not in self._seen:
                for k in pq.read_table(part, columns=[self.key]).column(0).to_pylist():
                    self._index.setdefault(k, part.name)
                self._seen.add(part.name)

    def get(self, keys: Sequence[str]) -> dict[str, dict]:
        """Stored rows for those of ``keys`` that exist."""
        self._refresh()
        by_part: dict[str, set[str]] = {}
        for k in set(keys):
            if k in self._index:
                by_part.setdefault(self._index[k], set()).add(k)
        found: dict[str, dict] = {}
        for part, ks in sorted(by_part.items()):
            t = pq.read_table(self.directory / part)
            for row in t.filter(pc.is_in(t.column(self.key), pa.array(sorted(ks), pa.string()))).to_pylist():
                found.setdefault(row[self.key], row)
        return found

    def add(self, rows: list[dict]) -> None:
        if not rows:
            return
        table = pa.Table.from_pylist(rows, schema=self.schema)
        name = "part-" + sha256_of(*sorted(r[self.key] for r in rows))[:24] + ".parquet"
        write_parquet(table, self.directory / name)
        self._seen.add(name)
        for r in rows:
            self._index.setdefault(r[self.key], name)


_VLLM: dict[tuple[str, str], VLLMSampler] = {}


class RolloutGenerator:
    """k rollouts per prompt through the store: only (prompt, j) pairs not stored yet are generated."""

    def __init__(self, run_dir: Path, model_ref: str, backend: str = "transformers", device: str = "auto",
                 dtype: str = "float32", quiet: bool = True):
        from curator.ml.models import resolve_model

        self.spec = resolve_model(model_ref)
        self.backend, self.device, self.dtype = backend, device, dtype
        self.quiet = quiet
        self.store = PartStore(Path(run_dir) / "cache" / "rollouts", "rollout_id", ROLLOUT_SCHEMA)
        self._sampler = None
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.spec.path, local_files_only=True)
        return self._tokenizer

    def sampler(self):
        """The backend for this model; a vLLM engine is shared by every generator in the process."""
        if self._sampler is None:
            if self.backend == "vllm":
                key = (self.spec.fingerprint, self.dtype)
                if key not in _VLLM:
                    _VLLM[key] = VLLMSampler(self.spec.path, self.tokenizer, self.dtype)
                self._sampler = _VLLM[key]
            else:
                from curator.ml.models import load_model

                m = load_model(self.spec, device=self.device, dtype=self.dtype)
                self._sampler = TransformersSampler(m.model, m.tokenizer, m.device)
        return self._sampler

    def group_id(self, prompt_ids: list[int], gen: GenParams) -> str:
        return sha256_of("rollout-group-v1", self.spec.fingerprint, json.dumps(prompt_ids), gen.to_json())

    def rollouts(self, prompts: Sequence[str | list[dict]], k: int, gen: GenParams) -> list[list[dict]]:
        """For each prompt (text or chat messages), its rollouts j = 0..k-1 as store rows."""
        from curator.ml.chat import render_generation_prompt
        from curator.progress import progress_bar

        gen = GenParams(**{**asdict(gen), "backend": self.backend, "dtype": self.dtype})
        rendered = [render_generation_prompt(self.tokenizer, p) for p in prompts]
        groups = [self.group_id(ids, gen) for ids in rendered]
        wanted = {sha256_of(g, str(j)): (i, j) for i, g in enumerate(groups) for j in range(k)}
        have = self.store.get(list(wanted))
        blocks = sorted({(i, j // gen.block) for rid, (i, j) in wanted.items() if rid not in have})
        with progress_bar("rollouts", len(blocks) * gen.block, self.quiet) as advance:
            for s in range(0, len(blocks), 8):  # one stored part per 8 blocks: a killed run keeps them
                chunk = blocks[s:s + 8]
                js = [range(b * gen.block, (b + 1) * gen.block) for _, b in chunk]
                seeds = [[rollout_seed(gen.seed, groups[i], j) for j in jr] for (i, _), jr in zip(chunk, js)]
                samples = self.sampler().sample([(rendered[i], sd) for (i, _), sd in zip(chunk, seeds)], gen)
                rows = []
                for (i, _), jr, sds, smps in zip(chunk, js, seeds, samples):
                    text = prompts[i] if isinstance(prompts[i], str) else json.dumps(prompts[i])
                    for j, sd, smp in zip(jr, sds, smps):
                        rows.append({"rollout_id": sha256_of(groups[i], str(j)), "group_id": groups[i],
                                     "pair_key": pair_key(text, smp.text), "prompt": text, "j": j, "text": smp.text,
                                     "finish_reason": smp.finish_reason, "n_tokens": smp.n_tokens, "seed": sd,
                                     "model_fp": self.spec.fingerprint, "gen_params": gen.to_json()})
                self.store.add(rows)
                have.update({r["rollout_id"]: r for r in rows})
                advance(len(chunk) * gen.block)
        return [[have[sha256_of(g, str(j))] for j in range(k)] for g in groups]


class VerdictCache:
    """Judges (prompt, rollout) pairs through the verdict store; ensembles cache each member separately."""

    def __init__(self, run_dir: Path):
        self.store = PartStore(Path(run_dir) / "cache" / "verdicts", "verdict_key", VERDICT_SCHEMA)
        self._fps: dict[int, str] = {}
        self.n_judged = 0  # pairs actually sent to a (non-ensemble) judge

    def fingerprint(self, judge: Judge) -> str:
        if id(judge) not in self._fps:
            self._fps[id(judge)] = judge.fingerprint()
        return self._fps[id(judge)]

    def judge(self, judge: Judge, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        if isinstance(judge, EnsembleJudge):
            return [judge.combine(v) for v in zip(*self.members(judge, pairs))]
        fp, pks = self.fingerprint(judge), [pair_key(p, r) for p, r in pairs]
        keys = [sha256_of(fp, pk) for pk in pks]
        have = self.store.get(keys)
        todo = {k: (pairs[i], pks[i]) for i, k in enumerate(keys) if k not in have}
        if todo:
            verdicts = judge.judge([pr for pr, _ in todo.values()])
            rows = [{"verdict_key": k, "pair_key": pk, "judge": judge.name, "judge_fp": fp, "harmful": v.harmful,
                     "refusal": v.refusal, "raw": v.raw} for (k, (_, pk)), v in zip(todo.items(), verdicts)]
            self.store.add(rows)
            have.update({r["verdict_key"]: r for r in rows})
            self.n_judged += len(todo)
        return [Verdict(have[k]["harmful"], have[k]["refusal"], have[k]["raw"], have[k]["judge"]) for k in keys]

    def members(self, judge: EnsembleJudge, pairs: Sequence[tuple[str, str]]) -> list[list[Verdict]]:
        """Per member judge, its verdicts on ``pairs`` (abstentions added to ``judge.abstain_counts``)."""
        per = [self.judge(m, pairs) for m in judge.judges]
        for m, vs in zip(judge.judges, per):
            judge.abstain_counts[m.name] += sum(v.harmful is None for v in vs)
        return per

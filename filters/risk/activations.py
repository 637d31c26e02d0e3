"""Forward-only features for the activation risk stages, plus their shared artifact and cache plumbing.

Layer convention (as ``output_hidden_states``): ``hidden_states[0]`` is the embedding output,
``hidden_states[ℓ]`` for ``1 ≤ ℓ < L`` the output of block ``ℓ-1`` (residual stream, pre-norm) and
``hidden_states[L]`` the final-norm output (HF ties the last entry to ``last_hidden_state``).
``layer_hidden`` returns exactly that tensor and stops the forward right after it (early exit: a
forward hook on the producing module raises), so blocks after ``ℓ`` and the LM head never run.

Positions per row (right padding, from ``curator.ml.chat.encode_sample``): ``ref`` = the last prompt
token (``prompt_len - 1``); for text-only rows (no prompt) ``ref`` = the first token (BOS when the
tokenizer has one). ``response`` = labelled tokens (response + end-of-turn) other than ``ref``;
``last`` = the last non-pad token.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file
from torch import nn

from curator.errors import InputError
from curator.io import atomic_path
from curator.ml.chat import IGNORE, EncodedSample, collate, encode_sample
from curator.ml.lora import HASH_KEY, load_verified, tensors_sha256
from curator.ml.robust import score_robustly
from curator.progress import progress_bar
from curator.stage import FLAG_COLUMN, Resources, Stage


class _EarlyExit(Exception):
    pass


def num_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def _producer(model: nn.Module, layer: int) -> nn.Module:
    """The module whose forward output is ``hidden_states[layer]``."""
    n = num_layers(model)
    if not 0 <= layer <= n:
        raise InputError(f"layer {layer} is out of range: the model has hidden states 0..{n}")
    base = model.base_model
    if layer == 0:
        return model.get_input_embeddings()
    return base.norm if layer == n else base.layers[layer - 1]


def layer_hidden(model: nn.Module, batch: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """``hidden_states[layer]`` [b,T,d] (float32) from a forward that stops right after it."""
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _EarlyExit

    handle = _producer(model, layer).register_forward_hook(hook)
    try:
        model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    except _EarlyExit:
        pass
    finally:
        handle.remove()
    return captured[0].float()


def all_hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Every ``hidden_states[ℓ]``, ℓ = 0..L, from one full forward (used to build references)."""
    out = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False, output_hidden_states=True)
    return tuple(h.float() for h in out.hidden_states)


@dataclass(frozen=True)
class Positions:
    ref: torch.Tensor  # [b] last prompt token (first token for text-only rows)
    last: torch.Tensor  # [b] last non-pad token
    response: torch.Tensor  # [b,T] bool, response tokens other than ``ref``


def positions(samples: Sequence[EncodedSample], batch: dict[str, torch.Tensor]) -> Positions:
    device = batch["attention_mask"].device
    ref = torch.tensor([max(s.prompt_len - 1, 0) for s in samples], device=device)
    last = batch["attention_mask"].sum(1) - 1
    response = batch["labels"] != IGNORE
    response[torch.arange(len(samples), device=device), ref] = False
    return Positions(ref, last, response)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h[i, t]`` over ``mask[i, t]``; NaN for rows with an empty mask."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1)  # 0/0 -> NaN on purpose: flagged downstream


def at(h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return h[torch.arange(h.shape[0], device=h.device), index.to(h.device)]


def encode_rows(tokenizer, batch: pa.RecordBatch | pa.Table, max_length: int) -> list[EncodedSample | str]:
    """``encode_sample`` per row (messages win over prompt/response); an error string for rows that fail."""
    cols = batch.schema.names
    prompts = batch.column("prompt").to_pylist() if "prompt" in cols else [None] * batch.num_rows
    responses = batch.column("response").to_pylist() if "response" in cols else [None] * batch.num_rows
    messages = batch.column("messages").to_pylist() if "messages" in cols else [None] * batch.num_rows
    out: list[EncodedSample | str] = []
    for p, r, m in zip(prompts, responses, messages):
        try:
            out.append(encode_sample(tokenizer, p, r, m, max_length=max_length))
        except (ValueError, KeyError, TypeError, InputError) as exc:
            out.append(f"cannot encode: {exc}")
    return out



# -- reference artifacts (safetensors + metadata + verified sha256) --------------------------------


def artifact_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def save_artifact(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> str:
    """Atomically write ``tensors`` with string metadata and ``curator_sha256``; returns that sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    meta[HASH_KEY] = tensors_sha256(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return meta[HASH_KEY]


def load_artifact(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load and verify; unreadable or tampered files are an ``InputError`` naming the file."""
    return load_verified(path, "reference artifact", "Delete it and rebuild (`curator directions build`).")


# -- per-sample cache (resume mid-shard) and output rows -------------------------------------------


class SampleCache:
    """Scores already computed, as Parquet parts ``part-<hash of ids>.parquet`` in ``directory``."""

    def __init__(self, directory: Path, columns: Sequence[str]):
        self.directory, self.columns = Path(directory), tuple(columns)
        self.rows: dict[str, dict] = {}
        for part in sorted(self.directory.glob("part-*.parquet")):
            for row in pq.read_table(part).to_pylist():
                self.rows[row["sample_id"]] = row

    def add(self, rows: list[dict]) -> None:
        if not rows:
            return
        ids = "\n".join(r["sample_id"] for r in rows)
        name = f"part-{hashlib.sha256(ids.encode()).hexdigest()[:20]}.parquet"
        schema = pa.schema([("sample_id", pa.string()), *[(c, pa.float64()) for c in self.columns],
                            (FLAG_COLUMN, pa.string())])
        table = pa.Table.from_pylist(rows, schema=schema)
        with atomic_path(self.directory / name) as tmp:
            pq.write_table(table, tmp)
        self.rows.update({r["sample_id"]: r for r in rows})


def score_row(sample_id: str, values: dict[str, float | None], reason: str | None = None) -> dict:
    """One output row: non-finite values become null and the row gets a ``flag_reason``."""
    bad = [k for k, v in values.items() if v is None or not math.isfinite(v)]
    clean = {k: (None if k in bad else float(v)) for k, v in values.items()}
    if bad and reason is None:
        reason = f"non-finite {', '.join(bad)}"
    return {"sample_id": sample_id, **clean, FLAG_COLUMN: reason}


def output_table(rows: list[dict], columns: Sequence[str]) -> pa.Table:
    schema = pa.schema([("sample_id", pa.string()), *[(c, pa.float64()) for c in columns], (FLAG_COLUMN, pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


# -- shared stage skeleton: encode, length-sorted fixed chunks, per-chunk cache, row fallback ------

CHUNKS_PER_CALL = 32  # the engine hands ``batch_size * CHUNKS_PER_CALL`` rows per process_batch call
FLUSH_EVERY = 8  # chunks between cache flushes


class ForwardScoreStage(Stage):
    """Base of the model score stages. Rows of a call are encoded, stably sorted by token length and
    cut into chunks of ``batch_size``; a chunk is skipped when every id is cached, otherwise scored
    whole (so a resumed run forms exactly the same batches as an uninterrupted one). A chunk that
    raises is retried row by row; a row that still fails gets null scores and a ``flag_reason``.
    Subclasses set ``columns`` and implement ``load()`` and ``score_chunk(samples, batch)``."""

    kind = "score"
    uses_model = True
    requires = ("sample_id", "prompt", "response")

    def resources(self) -> Resources:
        return Resources(batch_size=self.params.batch_size * CHUNKS_PER_CALL)

    def load(self) -> Any:  # -> LoadedModel used for tokenizer/device
        raise NotImplementedError

    def score_chunk(self, samples: list[EncodedSample], batch: dict[str, torch.Tensor]) -> dict[str, list[float]]:
        raise NotImplementedError

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        loaded = self.load()
        if getattr(self, "_cache", None) is None:
            self._cache = SampleCache(self.context.cache_dir, self.columns)
        cache = self._cache
        ids = batch.column("sample_id").to_pylist()
        encoded = encode_rows(loaded.tokenizer, batch, self.params.max_length)
        order = sorted((i for i, e in enumerate(encoded) if not isinstance(e, str) and e.response_len > 0),
                       key=lambda i: len(encoded[i].input_ids))
        chunks = [order[k : k + self.params.batch_size] for k in range(0, len(order), self.params.batch_size)]
        todo = [c for c in chunks if not all(ids[i] in cache.rows for i in c)]
        pending: list[dict] = []
        try:
            with progress_bar(self.name, len(todo), self.context.quiet or len(todo) < 2) as advance:
                for n, chunk in enumerate(todo, start=1):
                    pending += self._score_rows([ids[i] for i in chunk], [encoded[i] for i in chunk], loaded)
                    advance()
                    if n % FLUSH_EVERY == 0:
                        cache.add(pending)
                        pending = []
        finally:  # also on interruption: finished chunks are kept for the resumed run
            cache.add(pending)
        rows = []
        for sid, enc in zip(ids, encoded):
            if isinstance(enc, str):
                rows.append(score_row(sid, dict.fromkeys(self.columns), enc))
            elif enc.response_len == 0:  # a prompt-only row (e.g. safety prompts for hardness): nothing to score
                rows.append({"sample_id": sid, **dict.fromkeys(self.columns), FLAG_COLUMN: None})
            else:
                rows.append(cache.rows[sid])
        return output_table(rows, self.columns)

    def _score_rows(self, ids: list[str], samples: list[EncodedSample], loaded) -> list[dict]:
        """Score a chunk; out-of-memory halves it, errors and NaN/inf retry rows alone (curator.ml.robust);
        a row that still fails gets null scores and a ``flag_reason``."""

        def score(part: Sequence[EncodedSample]) -> list[tuple[float, ...]]:
            values = self.score_chunk(list(part), collate_to(part, loaded))
            return [tuple(values[c][k] for c in self.columns) for k in range(len(part))]

        scores, reasons = score_robustly(score, samples)
        return [score_row(sid, dict(zip(self.columns, s or (None,) * len(self.columns))),
                          None if why is None else f"scoring failed: {why}")
                for sid, s, why in zip(ids, scores, reasons)]

    def check_inputs(self, schema) -> None:
        super().check_inputs(schema)
        check_anchor_source(self.anchor_source())

    @cached_property
    def _spec(self):
        from curator.ml.models import resolve_model

        return resolve_model(self.context.model)

    @cached_property
    def _anchors(self) -> tuple[pa.Table, pa.Table, dict, str]:
        """(train, test, split record, anchor-set sha256) of the paired anchors."""
        p = self.params
        return anchor_pairs(self.anchor_source(), p.anchor_test_fraction, p.anchor_seed)

    def anchor_source(self) -> str:
        """``"default"`` or the anchor file, confined to the recipe's allowed roots like inputs."""
        anchors = self.params.anchors
        return anchors if anchors == "default" else str(self.context.data_path(anchors, f"{self.name}.with.anchors"))


def collate_to(samples: Sequence[EncodedSample], loaded) -> dict[str, torch.Tensor]:
    return {k: v.to(loaded.device) for k, v in collate(samples, loaded.tokenizer.pad_token_id).items()}


# -- paired anchors (harmful prompt, compliant answer, refusal) ------------------------------------

PAIR_COLUMNS = ("prompt", "compliant", "refusal")


def anchor_pairs(anchors: str, test_fraction: float, seed: int) -> tuple[pa.Table, pa.Table, dict, str]:
    """(train, test, split record, sha256 of the whole set): ``"default"`` = UncensorBench's 150 pairs,
    or a file (JSONL/Parquet/CSV/HF dir) with columns ``prompt, compliant, refusal``."""
    from curator.refdata.anchors import read_user_table, split, table_sha256, uncensorbench_pairs

    table = uncensorbench_pairs() if anchors == "default" else read_user_table(anchors)
    missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"anchor file {anchors}: needs columns {list(PAIR_COLUMNS)} (harmful prompt, compliant "
                         f"answer, refusal); missing {missing}, found {table.column_names}")
    table = table.select(list(PAIR_COLUMNS)).cast(pa.schema([(c, pa.string()) for c in PAIR_COLUMNS]))
    train, test, record = split(table, test_fraction, seed)
    if train.num_rows < 2:
        raise InputError(f"anchor set {anchors}: only {train.num_rows} training pairs after the split; need >= 2")
    return train, test, record, table_sha256(table)


def check_anchor_source(anchors: str) -> None:
    if anchors != "default" and not Path(anchors).exists():
        raise InputError(f"anchors: {anchors!r} is neither 'default' nor an existing file; give a JSONL/Parquet/"
                         "CSV file or HF dataset folder with columns prompt, compliant, refusal")

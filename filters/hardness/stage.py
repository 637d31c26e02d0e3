"""``hardness``: self-mined hardness of safety prompts (method notes §1.2-1.4, §6.5).

For each selected prompt p, k self-rollouts r_j (``filters.hardness.rollouts``) are judged by
``judge`` (a ``filters.hardness.judges.factory`` spec: "keyword", "classifier", {"llm": ...},
{"ensemble": [...]}) and

    hardness = n_harmful / k      (abstentions count as not harmful; ``abstain: exclude`` divides by k - n_abstain)

plus ``hardness_wilson_lb`` (Wilson lower bound at ``wilson_z``), optional ``hardness_beta`` =
(n_harmful + a) / (n + a + b) for ``smoothing: [a, b]``, ``hardness_rate_<judge>`` (share of rollouts
each ensemble member voted harmful), ``hardness_safe_j`` (rollout indices judged not harmful: the
safe answers the judge saw) and ``hardness_group`` (rollout group id). With ``framing`` each prompt is
rolled out inside a jailbreak-style template (``filters.framing``: one seeded template per prompt), as the
paper's adversarial harmful prompts are: hardness is then the hardness of that framed prompt, given in
``hardness_prompt`` (with ``hardness_template``), which ``rebalance`` trains on. Rollouts and
verdicts are declared artifacts (``rollouts``, ``verdicts``: views of ``curator query``) shared with later
stages. Only rows matching ``where`` (a DuckDB predicate) and ``sources`` with a
non-empty prompt are rolled out -- an SFT set mixes safety prompts with benign data, and hardness is
only meaningful on harmful prompts (the keyword judge's harm label is "did not refuse"). Other rows
get null columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from curator.database import boolean_problem, rule_text_problem, sandboxed_cursor, with_canonical_types
from curator.errors import RecipeError, RunError
from curator.report_sections import histogram_section, top_section, warning_section
from curator.stage import Artifact, ReportSection, Resources, Stage, StageContext
from curator.stats import wilson_lower_bound
from filters.framing import framed_prompts
from filters.hardness.judges.ensemble import EnsembleJudge
from filters.hardness.judges.factory import cached_judge, check_judge_spec
from filters.hardness.rollouts import (
    ROLLOUTS,
    GenParams,
    RolloutGenerator,
    check_backend,
    check_chat_template,
)
from filters.hardness.verdicts import VERDICTS, VerdictCache

WHERE_EXAMPLE = "source = 'advbench'"

BASE_COLUMNS = ("hardness", "hardness_k", "hardness_n_harmful", "hardness_n_abstain", "hardness_wilson_lb",
                "hardness_safe_j", "hardness_group")


ALL_SAME = (  # a model that complies with (or refuses) every prompt: the ranking carries no information
    "SELECT CASE WHEN max(hardness) = 0 THEN 'hardness is 0 for all ' || count(hardness) || ' prompts: the model "
    "refused every sampled answer, so no prompt is hard for it; use harder prompts (framing: builtin or pyrit), a "
    "larger k, or check that the judge recognises harmful answers' WHEN min(hardness) = 1 THEN 'hardness is 1 for "
    "all ' || count(hardness) || ' prompts: the model answered every sample harmfully (it complies with "
    "everything), so the ranking says nothing and rebalance has no safe answer to train on; use a safety-aligned "
    "`model:` (model: default is SmolLM2-135M-Instruct with curator''s safety adapter)' END AS warning FROM scores "
    "HAVING count(hardness) > 1")


def member_names(spec: Any) -> list[str]:
    """Column-safe names of an ensemble's members, derived from the spec (no judge is loaded)."""
    if not (isinstance(spec, dict) and "ensemble" in spec):
        return []
    names = []
    for m in spec["ensemble"]:
        name = m if isinstance(m, str) else next(iter(m))
        if name == "llm" and isinstance(m, dict):
            opts = m["llm"] or {}
            name = f"{opts.get('format', 'llama_guard_3')}_{Path(str(opts.get('path', ''))).name}"
        base = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
        names.append(base if base not in names else f"{base}_{len(names) + 1}")
    return names


def artifact_dir(context: StageContext, artifact: Artifact) -> Path:
    """Where ``artifact`` lives for this run: the recipe's declaration, else its declared path under the run."""
    return context.artifacts.get(artifact.name, context.run_dir / artifact.path)


@dataclass(frozen=True)
class HardnessParams:
    k: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off (the paper)
    seed: int | None = None  # None: the recipe seed
    judge: str | dict[str, Any] = "keyword"
    where: str | None = None  # DuckDB predicate selecting the safety prompts, e.g. "source = 'advbench'"
    sources: tuple[str, ...] | None = None  # alternatively: only rows whose `source` is listed
    backend: Literal["transformers", "vllm"] = "transformers"
    abstain: Literal["safe", "exclude"] = "safe"
    wilson_z: float = 1.96
    smoothing: tuple[float, ...] | None = None  # [a, b] Beta prior -> hardness_beta
    max_abstain_rate: float | None = None  # fail when a judge abstains on more rollouts of a batch
    batch_size: int = 64  # prompts per batch
    block: int = 8  # rollouts of one prompt sampled together (part of the rollout identity)
    framing: Literal["pyrit", "builtin", "both"] | None = None  # roll out jailbreak-framed prompts
    max_template_chars: int | None = 1500  # framing: longest template used

    def validate(self) -> None:
        if self.k < 1 or self.batch_size < 1 or self.block < 1:
            raise ValueError("k, batch_size and block must be >= 1")
        try:
            check_judge_spec(self.judge)
        except RecipeError as exc:
            raise ValueError(f"judge: {exc}") from None
        if not self.wilson_z > 0:
            raise ValueError(f"wilson_z must be > 0 (1.96: a 95% lower bound), got {self.wilson_z}")
        if self.max_abstain_rate is not None and not 0 <= self.max_abstain_rate <= 1:
            raise ValueError(f"max_abstain_rate is a share of rollouts, in [0, 1]; got {self.max_abstain_rate}")
        if self.smoothing is not None and (len(self.smoothing) != 2 or min(self.smoothing) <= 0):
            raise ValueError(f"smoothing must be [a, b] with a, b > 0, got {list(self.smoothing)}")
        problem = rule_text_problem(self.where, WHERE_EXAMPLE) if self.where is not None else None
        if problem:
            raise ValueError(f"where: {problem}")
        try:
            GenParams(self.temperature, self.top_p, self.top_k, self.max_new_tokens, 0, self.backend, block=self.block)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None


class HardnessStage(Stage):
    name = "hardness"
    kind = "score"
    version = 1
    Params = HardnessParams
    requires = ("sample_id", "prompt")
    provides = BASE_COLUMNS
    uses_model = True
    artifacts = (ROLLOUTS, VERDICTS)

    def resources(self) -> Resources:
        return Resources(batch_size=self.params.batch_size, gpus=1.0 if self.params.backend == "vllm" else 0.0)

    def provided_columns(self) -> tuple[str, ...]:
        extra = ("hardness_beta",) if self.params.smoothing else ()
        extra += ("hardness_prompt", "hardness_template") if self.params.framing else ()
        return BASE_COLUMNS + extra + tuple(f"hardness_rate_{n}" for n in member_names(self.params.judge))

    def required_columns(self) -> tuple[str, ...]:
        return self.requires + (("source",) if self.params.sources else ())

    @property
    def seed(self) -> int:
        return self.context.seed if self.params.seed is None else self.params.seed

    def gen_params(self) -> GenParams:
        p = self.params
        return GenParams(p.temperature, p.top_p, p.top_k, p.max_new_tokens, self.seed, p.backend, self.context.dtype,
                         p.block)

    def fingerprint_inputs(self) -> dict[str, Any]:
        from curator.ml.models import model_inputs, resolve_model  # start-up time: torch

        judge = cached_judge(self.params.judge)
        return {**model_inputs(resolve_model(self.context.model)), "judge": judge.fingerprint(), "seed": self.seed}

    def report_sections(self) -> tuple[ReportSection, ...]:
        return (histogram_section("hardness", "Hardness", "harmful rollouts / k, per selected prompt"),
                top_section("hardness", "Hardest"),
                warning_section("Hardness: no spread", ALL_SAME))

    def check_inputs(self, schema: pa.Schema) -> None:
        super().check_inputs(schema)
        check_backend(self.params.backend)
        check_chat_template(self.context.model, "hardness")
        if self.params.where:
            con = sandboxed_cursor()  # a predicate over the rows: no file or network access
            con.register("batch", with_canonical_types(schema).empty_table())
            try:
                problem = boolean_problem(con, f"SELECT ({self.params.where}) FROM batch", WHERE_EXAMPLE)
            except duckdb.Error as exc:
                visible = [n for n in schema.names if not n.startswith("_")]
                problem = f"{str(exc).splitlines()[0]}; columns available: {visible}"
            if problem:
                raise RecipeError(f"hardness where {self.params.where!r}: {problem}")

    def setup(self) -> None:
        self.judge = cached_judge(self.params.judge)
        self.generator = RolloutGenerator(artifact_dir(self.context, ROLLOUTS), self.context.model,
                                          self.params.backend, self.context.device, self.context.dtype,
                                          self.context.quiet)
        self.verdicts = VerdictCache(artifact_dir(self.context, VERDICTS))

    def selected(self, table: pa.Table) -> list[bool]:
        prompts = table.column("prompt").to_pylist()
        mask = [isinstance(p, str) and bool(p.strip()) for p in prompts]
        if self.params.sources:
            mask = [m and s in self.params.sources for m, s in zip(mask, table.column("source").to_pylist())]
        if self.params.where:
            con = sandboxed_cursor()
            con.register("batch", table)
            hit = con.sql(f"SELECT coalesce(({self.params.where}), false) FROM batch").fetchall()
            mask = [m and bool(h[0]) for m, h in zip(mask, hit)]
        return mask

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        mask = self.selected(table)
        prompts = [p for p, m in zip(table.column("prompt").to_pylist(), mask) if m]
        records = iter(self.score(prompts))
        rows = [next(records) if m else {} for m in mask]
        cols = {"sample_id": table.column("sample_id")}
        types = {"hardness_k": pa.int64(), "hardness_n_harmful": pa.int64(), "hardness_n_abstain": pa.int64(),
                 "hardness_safe_j": pa.list_(pa.int64()), "hardness_group": pa.string(),
                 "hardness_prompt": pa.string(), "hardness_template": pa.string()}
        for c in self.provided_columns():
            cols[c] = pa.array([r.get(c) for r in rows], types.get(c, pa.float64()))
        return pa.table(cols)

    def check_abstentions(self, names: list[str], per_judge: list[list]) -> None:
        """RunError when a judge abstains (unparsable output, empty response) on too many rollouts."""
        limit = self.params.max_abstain_rate
        for name, vs in zip(names, per_judge):
            rate = sum(v.harmful is None for v in vs) / max(1, len(vs))
            if limit is not None and rate > limit:
                raise RunError(f"hardness: judge {name!r} abstained on {rate:.1%} of {len(vs)} rollouts "
                               f"(max_abstain_rate {limit:.1%}); check its model/template, or raise the limit")

    def framed(self, prompts: list[str]) -> dict[str, tuple[str, str]]:
        """prompt -> (framed prompt, template id) with ``framing``; each prompt's template depends only on it."""
        if not self.params.framing:
            return {}
        distinct = set(prompts)
        table = framed_prompts(sorted(distinct), len(distinct), self.seed, source=self.params.framing,
                               max_template_chars=self.params.max_template_chars)
        return {r["base_prompt"]: (r["prompt"], r["template_id"]) for r in table.to_pylist()}

    def score(self, prompts: list[str]) -> list[dict]:
        """One record (column -> value) per prompt."""
        if not prompts:
            return []
        k, p = self.params.k, self.params
        framed = self.framed(prompts)
        asked = [framed[q][0] for q in prompts] if framed else prompts
        rollouts = self.generator.rollouts(asked, k, self.gen_params())
        pairs = [(prompt, r["text"]) for prompt, rs in zip(asked, rollouts) for r in rs]
        names = member_names(p.judge)
        if isinstance(self.judge, EnsembleJudge):
            members = self.verdicts.members(self.judge, pairs)
            final = [self.judge.combine(v) for v in zip(*members)]
        else:
            members, final = [], self.verdicts.judge(self.judge, pairs)
        self.check_abstentions(names or [self.judge.name], members or [final])
        out = []
        for i, rs in enumerate(rollouts):
            vs = final[i * k:(i + 1) * k]
            n_harm = sum(v.harmful is True for v in vs)
            n_abst = sum(v.harmful is None for v in vs)
            n = k - n_abst if p.abstain == "exclude" else k
            rec = {"hardness": n_harm / n if n else None, "hardness_k": k, "hardness_n_harmful": n_harm,
                   "hardness_n_abstain": n_abst, "hardness_wilson_lb": wilson_lower_bound(n_harm, n, p.wilson_z),
                   "hardness_safe_j": [r["j"] for r, v in zip(rs, vs) if v.harmful is False],
                   "hardness_group": rs[0]["group_id"]}
            if framed:
                rec["hardness_prompt"], rec["hardness_template"] = framed[prompts[i]]
            if p.smoothing:
                a, b = p.smoothing
                rec["hardness_beta"] = (n_harm + a) / (n + a + b)
            for name, mv in zip(names, members):
                rec[f"hardness_rate_{name}"] = sum(v.harmful is True for v in mv[i * k:(i + 1) * k]) / k
            out.append(rec)
        return out

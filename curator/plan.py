"""Execution plan: stage instances, chained fingerprints, phases, and per-shard views.

Fingerprint chain: ``fp_0 = H(inputs sha256, shards, normalize params)`` and
``fp_i = H(fp_{i-1}, name, version, params, stage.fingerprint_inputs())``: changing one stage
changes its fingerprint and every later one, and nothing earlier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.errors import RecipeError
from curator.io import read_parquet
from curator.recipe import Recipe, StageSpec, canonical_json
from curator.registry import get_stage
from curator.rundir import RunDir
from curator.stage import Stage, StageContext, params_to_dict

INGEST_STAGE = "normalize"


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:24]


@dataclass
class PlannedStage:
    index: int
    spec: StageSpec
    stage: Stage  # constructed, not set up
    fingerprint: str

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def kind(self) -> str:
        return self.stage.kind

    @property
    def scope(self) -> str:
        return self.stage.scope


@dataclass
class Plan:
    recipe: Recipe
    normalizer: Stage
    ingest_fingerprint: str
    stages: list[PlannedStage]

    def phases(self) -> list[tuple[str, list[PlannedStage]]]:
        """Consecutive shard-scope stages form one phase; each global stage is its own phase."""
        out: list[tuple[str, list[PlannedStage]]] = []
        for ps in self.stages:
            if ps.scope == "global":
                out.append(("global", [ps]))
            elif out and out[-1][0] == "shard":
                out[-1][1].append(ps)
            else:
                out.append(("shard", [ps]))
        return out

    @property
    def final_fingerprint(self) -> str:
        return self.stages[-1].fingerprint if self.stages else self.ingest_fingerprint


def make_context(recipe: Recipe, rundir: RunDir, fp: str, quiet: bool) -> StageContext:
    return StageContext(run_dir=rundir.root, cache_dir=rundir.cache(fp), model=recipe.model, device=recipe.device,
                        dtype=recipe.dtype, seed=recipe.seed, quiet=quiet, recipe_dir=recipe.base_dir,
                        artifacts=declared_artifacts(recipe, rundir))


def declared_artifacts(recipe: Recipe, rundir: RunDir) -> dict[str, Path]:
    """Every artifact the recipe's stages declare: name -> directory (one path per name)."""
    found: dict[str, Path] = {}
    for k, spec in enumerate(recipe.stages):
        for art in get_stage(spec.use, f"stages[{k}].use").artifacts:
            path = rundir.root / art.path
            if found.setdefault(art.name, path) != path:
                raise RecipeError(f"stages[{k}] ({spec.id}): artifact '{art.name}' is declared with two paths "
                                  f"({found[art.name]} and {path})")
    return found


def ingest_plan(recipe: Recipe, rundir: RunDir, input_hashes: list[str], quiet: bool = False
                ) -> tuple[Stage, str, list[StageSpec]]:
    """(normalizer, ingest fingerprint, the remaining stage specs)."""
    specs = list(recipe.stages)
    norm_cls = get_stage(INGEST_STAGE)
    if specs and specs[0].use == INGEST_STAGE:
        norm_spec, specs = specs[0], specs[1:]
    elif any(s.use == INGEST_STAGE for s in specs):
        raise RecipeError("stages: `normalize` must be the first stage (it runs at ingest)")
    else:
        norm_spec = StageSpec(use=INGEST_STAGE, id=INGEST_STAGE, params=norm_cls.Params())
    inputs = [(i.format, i.source, i.limit, i.sample, i.sample_seed) for i in recipe.inputs]
    fp = fingerprint("ingest", input_hashes, inputs, recipe.shards, norm_cls.version, params_to_dict(norm_spec.params))
    return norm_cls(norm_spec.params, make_context(recipe, rundir, fp, quiet)), fp, specs


def build_plan(recipe: Recipe, rundir: RunDir, input_hashes: list[str], quiet: bool = False,
               schema: pa.Schema | None = None) -> Plan:
    """Construct every stage; with ``schema`` check their columns first, then fingerprint them
    (fingerprinting may build reference artifacts, so bad recipes fail before any model loads)."""
    normalizer, ingest_fp, specs = ingest_plan(recipe, rundir, input_hashes, quiet)
    probes = []
    for k, spec in enumerate(specs, start=1):
        cls = get_stage(spec.use, f"stages[{k}].use")
        if getattr(cls, "kind", None) == "ingest":
            raise RecipeError(f"stages[{k}]: `{spec.use}` runs at ingest and must be the first stage")
        probes.append((k, spec, cls, cls(spec.params, make_context(recipe, rundir, ingest_fp, quiet))))
    if schema is not None:
        check_columns([(k, spec.id, probe) for k, spec, _, probe in probes], schema)
    fp, planned = ingest_fp, []
    for k, spec, cls, probe in probes:
        fp = fingerprint(fp, spec.use, cls.version, params_to_dict(spec.params), probe.fingerprint_inputs())
        planned.append(PlannedStage(k, spec, cls(spec.params, make_context(recipe, rundir, fp, quiet)), fp))
    return Plan(recipe, normalizer, ingest_fp, planned)


def build_references(recipe: Recipe, rundir: RunDir, quiet: bool = False, force: bool = False) -> dict[str, dict]:
    """Build (or find cached) the reference artifacts of every stage of ``recipe`` that has them
    (``build_artifacts``): {stage id: {artifact: path}}; what ``curator directions build`` prints."""
    plan = build_plan(recipe, rundir, ["directions"], quiet)
    return {ps.id: ps.stage.build_artifacts(force=force) for ps in plan.stages if hasattr(ps.stage, "build_artifacts")}


def check_columns(stages: list[tuple[int, str, Stage]], schema: pa.Schema | None) -> None:
    """Every stage's required columns exist by the time it runs (checked before models load)."""
    names = list(schema.names) if schema is not None else ["sample_id", "prompt", "response", "messages", "source"]
    for index, stage_id, stage in stages:
        try:
            stage.check_inputs(pa.schema([(n, pa.null()) for n in names]))
        except RecipeError as exc:
            raise RecipeError(f"stages[{index}] ({stage_id}): {exc}") from None
        if stage.kind == "score":
            names += [c for c in stage.provided_columns() if c not in names]


def attach(view: pa.Table, sidecar: pa.Table) -> pa.Table:
    """Append a score sidecar's columns to ``view`` by ``sample_id`` (order of ``view`` kept)."""
    cols = [c for c in sidecar.column_names if c != "sample_id" and c not in view.column_names]
    if sidecar.num_rows == view.num_rows and sidecar.column("sample_id").equals(view.column("sample_id")):
        for c in cols:
            view = view.append_column(c, sidecar.column(c))
        return view
    index = pc.index_in(view.column("sample_id"), value_set=sidecar.column("sample_id"))
    for c in cols:
        view = view.append_column(c, pc.take(sidecar.column(c), index))
    return view


def shard_view(rundir: RunDir, plan: Plan, upto: int, shard: int) -> pa.Table | None:
    """Samples of ``shard`` as seen by stage ``upto``: earlier scores joined, earlier drops removed;
    only the columns the stage reads (``Stage.view_columns``) are loaded."""
    path = rundir.input_shard(shard)
    if not path.exists():
        return None
    earlier = [ps for ps in plan.stages if ps.index < upto and ps.kind in ("score", "decide")
               and rundir.scores(ps.id, shard).exists()]
    stage = next(ps.stage for ps in plan.stages if ps.index == upto)
    available = list(pq.read_schema(path).names)
    for ps in earlier:
        if ps.kind == "score":
            available += [c for c in pq.read_schema(rundir.scores(ps.id, shard)).names if c not in available]
    wanted = {"sample_id", "_input_idx", "_input_row", *stage.view_columns(available)}
    view = read_parquet(path, wanted)
    for ps in earlier:
        side_path = rundir.scores(ps.id, shard)
        if ps.kind == "score":
            view = attach(view, read_parquet(side_path, wanted))
        else:
            side = read_parquet(side_path, ["sample_id", "status"])
            dropped = side.filter(pc.equal(side.column("status"), "dropped")).column("sample_id")
            view = view.filter(pc.invert(pc.is_in(view.column("sample_id"), value_set=dropped)))
    return view


def stage_dirs(root: Path, plan: Plan) -> dict[str, str]:
    return {ps.id: ps.kind for ps in plan.stages}

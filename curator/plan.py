"""Execution plan, built once per run: the ingest stage (phase 0), every later stage with its chained
fingerprint, and the units executors run.

Fingerprint chain: ``fp_0 = H(inputs sha256, shards, ingest stage params)`` and
``fp_i = H(fp_{i-1}, name, version, params, stage.fingerprint_inputs())``: changing one stage
changes its fingerprint and every later one, and nothing earlier.

Two steps, each taken once: ``plan_ingest`` (phase 0) before the ingest and ``plan_stages`` after it,
because stages are checked against the ingested columns before they are fingerprinted (fingerprinting
may build reference artifacts and load models). A ``Plan`` holds stage classes and params, never
instances, so it pickles for the local process pool and for Ray; workers construct and set up stages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.errors import InputError, RecipeError
from curator.io import bytes_on_disk
from curator.readers import input_parts
from curator.recipe import Recipe, StageSpec, canonical_json
from curator.registry import get_stage, ingest_stage
from curator.rundir import RunDir, shard_name
from curator.samples import CANONICAL
from curator.stage import (
    FLAG_COLUMN,
    IngestParams,
    ReportSection,
    Resources,
    Stage,
    StageContext,
    params_to_dict,
)

RESERVED_OUTPUTS = (*CANONICAL, "status", "status_reason")  # columns of the views and of apply's result
UnitKind = Literal["input", "ingest", "shard", "map", "global"]


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class InputFile:
    """A resolved recipe input (same position as in ``recipe.inputs``) and its content hash."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class PlannedStage:
    """A stage of the plan: recipe entry, class, fingerprint, and what the driver learnt from an
    instance of it (resources, the fingerprint inputs hashed into ``fingerprint``, report sections)."""

    index: int  # 0: the ingest stage; later stages count from 1 in recipe order
    spec: StageSpec
    cls: type[Stage]
    fingerprint: str
    resources: Resources = Resources()
    inputs: dict[str, Any] = field(default_factory=dict)
    report: tuple[ReportSection, ...] = ()

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def params(self) -> Any:
        return self.spec.params

    @property
    def kind(self) -> str:
        return self.cls.kind

    @property
    def scope(self) -> str:
        return self.cls.scope


@dataclass(frozen=True)
class InputPart:
    """Part ``index`` of ``of`` of an input read in parts (``readers.input_parts``: a JSONL byte range, Parquet
    row groups, Arrow rows), read with what its file's first block fixes (``ingest.read_inputs``): ``schema``
    (a JSONL file's column types, serialised) and ``format`` (the layout ``auto`` resolves to; "": none yet)."""

    index: int
    of: int
    schema: bytes = b""
    format: str = ""


@dataclass(frozen=True)
class Unit:
    """One job with its own done markers (``markers/<stage fp>/<name>.done``). ``input``: read input
    file ``index`` (or its ``part``); ``ingest``: write shard ``index``'s canonical files; ``shard``: run
    consecutive shard-scope stages on shard ``index``; ``map``: a ``map_reduce`` stage's ``map_shard`` on shard
    ``index``; ``global``: a global stage on every shard at once (run by the driver)."""

    kind: UnitKind
    stages: tuple[str, ...]  # stage ids in run order (the ingest stage's for input / ingest units)
    index: int | None  # shard, or input file for ``input``; None for ``global``
    cpus: float = 1.0  # per worker: the most any of its stages asks for
    gpus: float = 0.0
    uses_model: bool = False
    part: InputPart | None = None  # ``input``: one part of the file; None: the whole file

    @property
    def name(self) -> str:
        if self.kind == "global":
            return "global"
        if self.kind == "input":
            # a part's name holds the number of parts: a resume that splits the file otherwise trusts none of them
            part = f"-part-{self.part.index:05d}-of-{self.part.of:05d}" if self.part else ""
            return f"input-{self.index:05d}{part}"
        return shard_name(self.index)

    def whole(self) -> Unit:
        """The unit that reads this ``input`` unit's whole file."""
        return replace(self, part=None)


@dataclass(frozen=True)
class Phase:
    """``units`` run on an executor in any order; then ``final`` (a global stage) on the driver."""

    desc: str
    stages: tuple[str, ...]
    units: tuple[Unit, ...]
    final: Unit | None = None


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    rundir: RunDir
    quiet: bool
    artifacts: dict[str, Path]  # every artifact the recipe's stages declare: name -> directory
    files: tuple[InputFile, ...]  # what phase 0 reads
    ingest: PlannedStage  # phase 0
    stages: tuple[PlannedStage, ...] = ()  # set by ``plan_stages``
    parts: tuple[int, ...] = ()  # parts each input file is read in (``input_units``; none given: 1 each)

    @property
    def input_bytes(self) -> int:
        """Bytes of the input files on disk (named sources count as none)."""
        return bytes_on_disk([f.path for f in self.files])

    @property
    def final_fingerprint(self) -> str:
        return self.stages[-1].fingerprint if self.stages else self.ingest.fingerprint

    def context(self, fp: str) -> StageContext:
        r = self.recipe
        return StageContext(run_dir=self.rundir.root, cache_dir=self.rundir.cache(fp), model=r.model, device=r.device,
                            dtype=r.dtype, seed=r.seed, quiet=self.quiet, recipe_dir=r.base_dir,
                            artifacts=dict(self.artifacts))

    def new_stage(self, ps: PlannedStage) -> Stage:
        """A fresh instance of ``ps`` in its own context (not set up)."""
        return ps.cls(ps.params, self.context(ps.fingerprint))

    def steps(self, unit: Unit) -> tuple[PlannedStage, ...]:
        """The planned stages ``unit`` runs."""
        if unit.kind in ("input", "ingest"):
            return (self.ingest,)
        by_id = {ps.id: ps for ps in self.stages}
        return tuple(by_id[sid] for sid in unit.stages)

    def input_units(self) -> tuple[Unit, ...]:
        """A unit per input file, or per part of a file split in ``parts``."""
        out = []
        for i in range(len(self.files)):
            unit, parts = _unit("input", [self.ingest], i), self.parts[i] if self.parts else 1
            out += [replace(unit, part=InputPart(k, parts)) for k in range(parts)] if parts > 1 else [unit]
        return tuple(out)

    def ingest_units(self) -> tuple[Unit, ...]:
        return tuple(_unit("ingest", [self.ingest], s) for s in range(self.recipe.shards))

    def phases(self) -> list[Phase]:
        """Consecutive shard-scope stages form one phase of shard units; each global stage is its own
        phase (``map`` units first if it is ``map_reduce``)."""
        groups: list[list[PlannedStage]] = []
        for ps in self.stages:
            if ps.scope == "shard" and groups and groups[-1][-1].scope == "shard":
                groups[-1].append(ps)
            else:
                groups.append([ps])
        shards = range(self.recipe.shards)
        out = []
        for group in groups:
            ids = tuple(ps.id for ps in group)
            if group[0].scope == "shard":
                out.append(Phase(f"stages {', '.join(ids)}", ids, tuple(_unit("shard", group, s) for s in shards)))
            else:
                maps = tuple(_unit("map", group, s) for s in shards) if group[0].cls.map_reduce else ()
                out.append(Phase(f"stage {ids[0]} (per shard)", ids, maps, _unit("global", group, None)))
        return out


def _unit(kind: UnitKind, stages: Sequence[PlannedStage], index: int | None) -> Unit:
    return Unit(kind, tuple(ps.id for ps in stages), index, cpus=max(ps.resources.cpus for ps in stages),
                gpus=max(ps.resources.gpus for ps in stages), uses_model=any(ps.cls.uses_model for ps in stages))


def plan_ingest(recipe: Recipe, rundir: RunDir, files: Sequence[InputFile], quiet: bool = False) -> Plan:
    """Phase 0: the ingest stage and its fingerprint; the plan has no later stages yet. The ingest
    stage is the recipe's first stage if it declares ``kind = "ingest"``, else the registry's only
    such stage with default params (the registry is searched only then: that loads every stage)."""
    kinds = [get_stage(s.use, f"stages[{k}].use").kind for k, s in enumerate(recipe.stages)]
    later = [s.use for s, kind in zip(recipe.stages[1:], kinds[1:]) if kind == "ingest"]
    if later:
        raise RecipeError(f"stages: `{later[0]}` must be the first stage (it runs at ingest)")
    if kinds[:1] == ["ingest"]:
        spec = recipe.stages[0]
        cls = get_stage(spec.use)
    else:
        cls = ingest_stage()
        spec = StageSpec(use=cls.name, id=cls.name, params=cls.Params())
    if not isinstance(spec.params, IngestParams):
        raise RecipeError(f"stage '{cls.name}' has kind 'ingest', so its Params need the fields "
                          f"{sorted(IngestParams.__annotations__)}")
    inputs = [(i.format, i.source, i.limit, i.sample, i.sample_seed) for i in recipe.inputs]
    fp = fingerprint("ingest", [f.sha256 for f in files], inputs, recipe.shards, cls.version,
                     params_to_dict(spec.params))
    # a large input read in full is read in parts, in parallel (``limit``, ``sample`` and
    # ``on_bad_row: fail`` need its row numbers as it is read); the outputs are the same either way
    parts = tuple(1 if i.limit is not None or i.sample is not None or spec.params.on_bad_row == "fail"
                  else input_parts(f.path) for f, i in zip(files, recipe.inputs))
    return Plan(recipe, rundir, quiet, declared_artifacts(recipe, rundir), tuple(files), PlannedStage(0, spec, cls, fp),
                parts=parts)


def plan_stages(plan: Plan, schema: pa.Schema | None) -> Plan:
    """``plan`` with every later stage: constructed, checked against the ingested columns ``schema``
    (unless None: ``check_columns``, ``check_shadowing``) before anything is fingerprinted, then fingerprinted
    in recipe order."""
    explicit = plan.recipe.stages[:1] == (plan.ingest.spec,)  # the recipe lists its ingest stage (normalize)
    specs = plan.recipe.stages[1:] if explicit else plan.recipe.stages
    first = 1 if explicit else 0  # specs[0]'s index in the recipe's stages (for messages)
    classes = [get_stage(spec.use, f"stages[{k}].use") for k, spec in enumerate(specs, start=first)]
    probes = [cls(spec.params, plan.context(plan.ingest.fingerprint)) for cls, spec in zip(classes, specs)]
    if schema is not None:
        check_columns(specs, probes, schema, first)
        check_shadowing(plan, specs, probes, schema)
    fp, planned = plan.ingest.fingerprint, []
    for k, (spec, cls, probe) in enumerate(zip(specs, classes, probes), start=1):
        inputs = probe.fingerprint_inputs()
        fp = fingerprint(fp, spec.use, cls.version, params_to_dict(spec.params), inputs)
        stage = cls(spec.params, plan.context(fp))
        planned.append(PlannedStage(k, spec, cls, fp, stage.resources(), inputs, tuple(stage.report_sections())))
    return replace(plan, stages=tuple(planned))


def build_plan(recipe: Recipe, rundir: RunDir, files: Sequence[InputFile], quiet: bool = False,
               schema: pa.Schema | None = None) -> Plan:
    """Both steps at once, for callers that do not ingest (``build_references``, tests)."""
    return plan_stages(plan_ingest(recipe, rundir, files, quiet), schema)


def build_references(recipe: Recipe, rundir: RunDir, quiet: bool = False, force: bool = False) -> dict[str, dict]:
    """Build (or find cached) the reference artifacts of every stage of ``recipe`` that has them
    (``build_artifacts``): {stage id: {artifact: path}}; what ``curator directions build`` prints."""
    plan = build_plan(recipe, rundir, (), quiet)
    return {ps.id: plan.new_stage(ps).build_artifacts(force=force) for ps in plan.stages
            if hasattr(ps.cls, "build_artifacts")}


def score_columns(recipe: Recipe, root: Path) -> list[str]:
    """The columns the recipe's score stages write, in recipe order (the stages are constructed, not set up:
    nothing is loaded)."""
    rundir = RunDir(root)
    context = StageContext(run_dir=root, cache_dir=root / "cache", model=recipe.model, recipe_dir=recipe.base_dir,
                           artifacts=declared_artifacts(recipe, rundir), quiet=True)
    columns: list[str] = []
    for k, spec in enumerate(recipe.stages):
        cls = get_stage(spec.use, f"stages[{k}].use")
        if cls.kind == "score":
            columns += [c for c in cls(spec.params, context).provided_columns() if c not in columns]
    return columns


def output_scores_problem(recipe: Recipe, written: Sequence[str]) -> str | None:
    """The problem with ``output.scores`` if it names a column that no score stage of the recipe writes
    (``written``; ``flag_reason`` is always there)."""
    missing = [c for c in recipe.output.scores if c not in written and c != FLAG_COLUMN]
    if not missing:
        return None
    return (f"output.scores: no score stage of this recipe provides {missing}; its score stages provide "
            f"{list(written)} (`curator stages` lists what each stage writes)")


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


def check_columns(specs: Sequence[StageSpec], stages: Sequence[Stage], schema: pa.Schema, first: int = 1) -> None:
    """Every stage's required columns exist by the time it runs (checked before models load); ``first`` is
    ``specs[0]``'s index in the recipe's stages."""
    names, written = list(schema.names), {}
    for pos, (index, spec, stage) in enumerate(zip(range(first, first + len(specs)), specs, stages)):
        try:
            stage.check_inputs(pa.schema([(n, pa.null()) for n in names]))
        except RecipeError as exc:
            from curator.database import missing_column  # start-up time: duckdb (a failed check only)

            missing = [c for c in stage.required_columns() if c not in names] + [missing_column(str(exc))]
            later = next((f" (stages[{first + pos + 1 + k}] ({s.id}) writes '{c}': move it before stage '{spec.id}')"
                          for k, (s, st) in enumerate(zip(specs[pos + 1:], stages[pos + 1:]))
                          for c in missing if st.kind == "score" and c in st.provided_columns()), "")
            raise RecipeError(f"stages[{index}] ({spec.id}): {exc}{later}") from None
        if stage.kind == "score":
            for column in stage.provided_columns():
                problem = output_name_problem(column, written)
                if problem:
                    raise RecipeError(f"stages[{index}] ({spec.id}): it writes the column '{column}', {problem}")
                written.setdefault(column, spec.id)
            names += [c for c in stage.provided_columns() if c not in names]


def output_name_problem(column: str, written: dict[str, str]) -> str | None:
    """Why a score stage may not write ``column`` (``written``: column -> the earlier stage that writes it), or None.
    Every stage may write ``FLAG_COLUMN``."""
    if column == FLAG_COLUMN:
        return None
    if column in RESERVED_OUTPUTS:
        return (f"one of curator's own ({', '.join(RESERVED_OUTPUTS)}); give the stage's column another name "
                "(a parameter of the stage, or its provides)")
    if column in written:
        return (f"which stage '{written[column]}' writes too, so rules and the scores view would read only the first; "
                "give one of them other column names, or drop one stage")
    return None


def check_shadowing(plan: Plan, specs: Sequence[StageSpec], stages: Sequence[Stage], schema: pa.Schema) -> None:
    """An ``InputError`` if an input's pass-through column has the name of a column a score stage writes: rules
    would read the input's value and the scores view the stage's. It names the input files, the column, the stage
    and the fix."""
    passed = {n for n in schema.names if n not in CANONICAL and not n.startswith("_")}
    for spec, stage in zip(specs, stages):
        taken = [c for c in stage.provided_columns() if c in passed] if stage.kind == "score" else []
        if taken:
            files = ", ".join(_inputs_with(plan, taken[0]))
            raise InputError(f"{files}: the input column '{taken[0]}' has the name of a column that stage "
                             f"'{spec.id}' writes, so decide rules would read the input's value, not the stage's; "
                             f"rename it in the file (e.g. 'input_{taken[0]}')")


def _inputs_with(plan: Plan, column: str) -> list[str]:
    """The input files whose ingested rows (``input/``) have a value in ``column``; every input file if none has."""
    held: set[int] = set()
    for shard in range(plan.recipe.shards):
        path = plan.rundir.input_shard(shard)
        if path.exists():
            rows = pq.read_table(path, columns=["_input_idx", column])
            held.update(pc.unique(rows.filter(pc.is_valid(rows.column(column))).column("_input_idx")).to_pylist())
    return [str(plan.files[i].path) for i in sorted(held)] or [str(f.path) for f in plan.files]

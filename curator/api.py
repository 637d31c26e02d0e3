"""``curator.apply``: run stages (or a recipe) on an in-memory data set and get it back with its scores.

The data (a ``datasets.Dataset``, a ``pyarrow.Table`` or a pandas ``DataFrame``) is written to one Parquet file
(``RUN_DIR/cache/apply/data.parquet``) and run like any input file, so the run directory holds the usual ledger, scores, dataset
and manifest. The result has one row per input row, in input order, with the input's columns, ``sample_id``,
every score column, ``status`` (``kept``, ``dropped``, ``flagged``, ``quarantined`` or ``probe``) and
``status_reason``; curator's columns replace input columns of the same name. Samples an augment stage adds
(``rebalance``) are in the run's dataset (``curator.RunResult.load(run_dir).dataset``, with ``run_dir`` given),
not in this table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curator.errors import CuratorError, RecipeError
from curator.inputs import input_name
from curator.pipeline import run
from curator.plan import score_columns
from curator.query import connect
from curator.recipe import FORMAT_NAMES, Recipe, load_recipe
from curator.rundir import RunDir
from curator.samples import CANONICAL, FORMATS, check_column_names

log = logging.getLogger("curator")
ADDED_COLUMNS = ("status", "status_reason")
LAYOUT_COLUMNS = {c for f in FORMATS.values() for c in (*f.required, *f.optional)}  # read by a layout, as text
CONVERSATION_COLUMNS = ("messages", "conversations")  # read by a layout as turns, or as the turns' JSON text


def to_table(data) -> pa.Table:
    """``data`` as an Arrow table (a ``datasets.Dataset`` with its indices applied, a DataFrame without its index:
    ``_from_pandas``); column names curator cannot keep are an ``InputError`` (``samples.check_column_names``)."""
    if type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):  # pandas, without importing it
        check_column_names([str(c) for c in data.columns], "curator.apply")
        return _from_pandas(data)
    kind = type(data).__name__
    if kind in ("IterableDataset", "IterableDatasetDict"):
        raise RecipeError(f"curator.apply: got a {kind}, which is read as it streams; curator needs the rows at "
                          "hand: materialise it first, e.g. datasets.Dataset.from_list(list(data.take(N)))")
    if kind == "DatasetDict":
        raise RecipeError(f"curator.apply: got a DatasetDict (splits: {', '.join(data)}); pass one split, e.g. "
                          f"data['{next(iter(data), 'train')}']")
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif hasattr(data, "with_format") and hasattr(data, "features"):  # datasets.Dataset (select/shuffle applied)
        table = data.with_format("arrow")[:]
    else:
        raise RecipeError(f"curator.apply: expected a datasets.Dataset, a pyarrow.Table or a pandas DataFrame, "
                          f"got {type(data).__name__}")
    check_column_names(table.column_names, "curator.apply")
    return table


def _from_pandas(frame) -> pa.Table:
    """A DataFrame without its index. A column whose values Arrow cannot hold as one type (``[1, "two", None]``)
    becomes text, as the file readers read one: strings as they are, other values as their JSON, nulls (None,
    NaN) null; a conversation column (turns whose contents differ in shape) as each row's JSON text, which its
    layout reads; another column a layout reads (``prompt``, ``instruction``, ...) is a ``RecipeError`` naming it."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    frame = frame.copy()
    for i, name in enumerate(frame.columns):
        column = frame.iloc[:, i]
        try:
            pa.array(column, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            frame.isetitem(i, _as_text(column, name))
    return pa.Table.from_pandas(frame, preserve_index=False)


def _as_text(column, name) -> list[str | None]:
    """The values of a DataFrame column of mixed types as text (see ``_from_pandas``)."""
    import pandas as pd  # the caller passed a DataFrame: pandas is imported already

    values = [None if pd.api.types.is_scalar(v) and pd.isna(v) else v for v in column]
    if name in CONVERSATION_COLUMNS:  # turns of different shapes (content parts in some): their JSON text, which
        return [v if v is None or isinstance(v, str) else json.dumps(v, default=_plain) for v in values]  # it reads
    if name in LAYOUT_COLUMNS:
        kinds = sorted({type(v).__name__ for v in values if v is not None})
        raise RecipeError(f"curator.apply: column '{name}' holds values Arrow cannot store as one type "
                          f"({', '.join(kinds)}), and curator's layouts read it: give it one type (strings, for text) "
                          "or drop the rows of another type")
    return [v if v is None or isinstance(v, str) else json.dumps(v, default=_plain) for v in values]


def _plain(value):
    """A value ``json`` cannot write (a NumPy array or scalar, a timestamp) as one it can."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _recipe(stages: list | None, recipe, fmt: str | None) -> Recipe:
    if (stages is None) == (recipe is None):
        raise RecipeError("curator.apply: give either stages=[...] or recipe=... (a path, YAML text, dict or Recipe)")
    if stages is not None and not isinstance(stages, (list, tuple)):
        raise RecipeError(f"curator.apply: stages= takes a list of stage names or {{use, with}} mappings, got "
                          f"{stages!r} (write stages=[{stages!r}] for one stage)")
    if recipe is not None:
        return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    items = [{"use": s} if isinstance(s, str) else s for s in stages]
    return load_recipe({"curator": 1, "name": "apply", "inputs": [{"path": "data.parquet", "name": "data",
                                                                   **({"format": fmt} if fmt else {})}],
                        "shards": 1, "stages": items})


def apply(data, *, stages: list | None = None, recipe=None, run_dir: str | Path | None = None,
          input: str | None = None, format: str | None = None, workers: int | None = None, quiet: bool = True,
          wait: float = 0.0):
    """Run ``stages`` (stage names or ``{use, with}`` mappings) or ``recipe`` on ``data``; return a
    ``datasets.Dataset`` (see the module docstring). ``input`` names the recipe input the data replaces (needed
    when the recipe has several, e.g. ``input="my_sft"`` keeps ``builtin:advbench``); ``format`` sets its layout
    (``messages``, ``prompt_response``, ...) when its columns fit several or none. The run directory is a new
    temporary directory unless ``run_dir`` is given (logged at INFO level); ``wait``: seconds for another run using
    it to finish; ``workers`` (an int >= 1) overrides the recipe's. A temporary run directory is removed once the
    result is built (kept when the run fails)."""
    import datasets  # start-up time: datasets (~1 s)

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise RecipeError(f"curator.apply: workers={workers!r}; expected a whole number >= 1 (or None: the recipe's)")
    if format is not None and format not in FORMAT_NAMES:
        raise RecipeError(f"curator.apply: format={format!r}; expected one of {', '.join(FORMAT_NAMES)}")
    table = to_table(data)
    rec = _recipe(stages, recipe, format)
    names = [input_name(i) for i in rec.inputs]
    if input is None and len(names) > 1:
        raise RecipeError(f"curator.apply: recipe '{rec.name}' has {len(names)} inputs ({', '.join(names)}); pass "
                          "input=NAME to say which one the data replaces")
    target = input or names[0]  # the data is read whole, whatever the recipe reads of the file
    if target not in names:
        raise RecipeError(f"curator.apply: input={input!r}: recipe '{rec.name}' has no input of that name; its inputs "
                          f"are {', '.join(names)}")
    root = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="curator-apply-"))
    RunDir(root.resolve()).check_is_run_dir()
    root.mkdir(parents=True, exist_ok=True)
    (root / ".lock").touch()  # a run directory from now on (its data file goes under cache/)
    rec = dataclasses.replace(rec, inputs=tuple(
        dataclasses.replace(i, limit=None, sample=None, format=format or i.format) if input_name(i) == target else i
        for i in rec.inputs))
    source = root / "cache" / "apply" / "data.parquet"

    def write_data(_root: Path) -> None:  # under the run directory's lock: another apply cannot swap it
        source.parent.mkdir(parents=True, exist_ok=True)
        replaced = _curator_columns(rec, root)
        pq.write_table(table.drop_columns([c for c in table.column_names if c in replaced]), source)

    annotated: list[pa.Table] = []
    try:
        result = run(rec, root, inputs=[f"{target}={source}"], workers=workers, quiet=quiet, wait=wait, prepare=write_data,
                     on_finish=lambda r: annotated.append(annotate(table, r.run_dir, _input_index(r, target))))
    except CuratorError as exc:  # about the data: name it as the caller knows it, not by its file in the run directory
        if str(source) not in str(exc):
            raise
        message = str(exc).replace(f"--input {target}={source}: ", "").replace(str(source), "the data given to apply")
        raise type(exc)(message.replace("Set `format:` on this input in the recipe.",
                                        "Pass format= to curator.apply.")) from None
    if run_dir is None:  # nobody can name it: the result is in memory (a failed run's directory stays, for its errors)
        shutil.rmtree(root, ignore_errors=True)
    else:
        log.info("curator.apply: run directory %s", result.run_dir)
    return datasets.Dataset(datasets.table.InMemoryTable(annotated[0]))


def _curator_columns(rec: Recipe, root: Path) -> set[str]:
    """The columns ``annotate`` sets: the recipe's score columns and ``ADDED_COLUMNS`` (the data's columns of those
    names are not run: curator's replace them, e.g. when a scored result is applied again). Canonical columns are
    never among them (a stage writing one is a recipe error of its own: ``plan.check_columns``)."""
    return {*(c for c in score_columns(rec, root) if c not in CANONICAL), *ADDED_COLUMNS}


def _input_index(result, name: str) -> int:
    """The run's input position of the input called ``name`` (inputs before it may have named several files)."""
    return next(i for i, entry in enumerate(result.manifest["inputs"]) if entry["name"] == name)


def annotate(table: pa.Table, run_dir: Path, input_idx: int = 0) -> pa.Table:
    """``table`` (the run's input ``input_idx``, in its order) with ``sample_id``, the score columns and the ledger
    status."""
    con = connect(run_dir)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    scores = "LEFT JOIN scores sc USING (sample_id)" if "scores" in views else ""
    extra = "sc.* EXCLUDE (sample_id)," if scores and len(con.execute("DESCRIBE scores").fetchall()) > 1 else ""
    rows = con.sql(f"SELECT l.input_row, l.sample_id, {extra} l.status, l.reason AS status_reason FROM ledger l "
                   f"{scores} WHERE l.input_row IS NOT NULL AND l.input_idx = ? ORDER BY l.input_row",
                   params=[input_idx]).to_arrow_table()
    if rows.num_rows != table.num_rows:
        raise RecipeError(f"curator.apply: the ledger of {run_dir} has {rows.num_rows} rows for {table.num_rows} "
                          "input rows; was the run directory used for other data?")
    for name in rows.column_names[1:]:
        column = rows.column(name)
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, column) if i >= 0 else table.append_column(name, column)
    return table

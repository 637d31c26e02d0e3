"""Engine throughput and memory: curator's model-free path against bare peer pipelines and equal-work peers.

On the same synthetic prompt/response JSONL files (two files, ~1.2 kB rows, 0.5% exact duplicates, some
paragraph breaks, lists and arithmetic), each system runs in a fresh process (``--child``), its rounds
interleaved in alternating order; a system's best time counts, and the parent samples the summed RSS of
the child's process tree every 20 ms.

- ``curator``: normalize -> quality -> decide (``char_len > 700``, ``is_duplicate``), ``workers: 2``,
  ledger, manifest and every hash on. ``engine peak`` is its peak RSS before ``finalize`` starts.
- bare peers, no extra work: ``datatrove`` JsonlReader -> LambdaFilter(length) -> JsonlWriter (2 tasks);
  ``hf`` ``load_dataset("json")`` -> ``filter(length, batched)`` -> ``save_to_disk``.
- equal-work peers (NFC, ids, normalised-text hashes, duplicates, length): ``pyarrow`` (plain
  read -> compute -> write), ``hf-equal`` (map + filter), ``datatrove-equal`` (LambdaFilter).
- ``floor`` (only with ``--systems``): a lower bound on any engine with curator's guarantees, doing less
  than they need (``run_floor``); if it is not faster than bare HF, neither can curator be.

    python -m benchmarks.perf.engine --rows 300000 1000000            # ~30 min on 2 busy cores
    python -m benchmarks.perf.engine --rows 3000000 --systems curator  # memory at scale
    python -m benchmarks.perf.engine --fixed-cost                      # a 1-row run, start to exit
    python -m benchmarks.perf.engine --rows 1000000 --systems floor hf curator  # the guarantees' floor
    python -m benchmarks.perf.engine --layout messages --systems curator hf --rows 300000  # chat rows

``--files 1`` puts all rows in one file (curator's ingest reads a file per unit). ``--layout messages`` writes each row as a two-turn conversation (``messages``: user, assistant) instead of
``prompt``/``response`` columns; the bare ``hf`` filter then sums the turns' lengths.

Times exclude interpreter start-up and the system's top-level imports (``--child`` prints both).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

WORDS = "the a model data safety answer question list step python number value train sample risk".split()
MAX_CHARS = 700
BARE = ("curator", "hf", "datatrove")
EQUAL = ("pyarrow", "hf-equal", "datatrove-equal")
FLOOR = ("floor",)


LAYOUTS = ("prompt_response", "messages")


def make_inputs(work: Path, rows: int, files: int = 2, layout: str = "prompt_response") -> list[Path]:
    """``files`` JSONL files of synthetic rows (seeded), 0.5% exact duplicates."""
    rng = random.Random(0)
    paths = [work / f"part-{i}.jsonl" for i in range(files)]
    handles = [open(p, "w") for p in paths]
    for i in range(rows):
        k = i if rng.random() > 0.005 else max(0, i - 1000)
        r = random.Random(k)
        words = r.choices(WORDS, k=r.randint(20, 360))
        for at in sorted(r.sample(range(len(words)), 2), reverse=True):
            words.insert(at, r.choice(["\n\n", "\n1.", "\n-", f"{k % 97} + {k % 13} =", "."]))
        doc = {"prompt": f"Q{k}: " + " ".join(r.choices(WORDS, k=12)), "response": " ".join(words)}
        if layout == "messages":
            doc = {"messages": [{"role": "user", "content": doc["prompt"]},
                                {"role": "assistant", "content": doc["response"]}]}
        handles[i % files].write(json.dumps(doc) + "\n")
    for h in handles:
        h.close()
    return paths


def recipe_text(paths: list[Path], workers: int) -> str:
    inputs = ", ".join(f"{{path: {p}}}" for p in paths)
    return f"""curator: 1
name: bench
inputs: [{inputs}]
shards: 16
executor: {{kind: local, workers: {workers}}}
stages:
  - use: normalize
  - use: quality
  - use: decide
    with: {{drop_if: ["char_len > {MAX_CHARS}", "is_duplicate"]}}
"""


def row_logic(prompt: str, response: str, seen: set[str]) -> bool:
    """Normalise, id, length and duplicate checks for one row; True = keep (the equal-work peers)."""
    prompt = unicodedata.normalize("NFC", prompt)
    response = unicodedata.normalize("NFC", response)
    sid = hashlib.sha256(json.dumps({"messages": None, "prompt": prompt, "response": response}, sort_keys=True,
                                    ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
    norm = " ".join((prompt + "\n" + response).split()).lower()
    key = hashlib.sha1(norm.encode()).hexdigest()[:16]
    dup = sid in seen or key in seen
    seen.update((sid, key))
    return not dup and len(prompt) + len(response) <= MAX_CHARS and bool(response.strip())


# -- the systems (each runs in a child process) ----------------------------------------------------------


def run_curator(paths: list[Path], out: Path) -> tuple[int, float | None, dict[str, float]]:
    import curator  # the system under test
    from curator import pipeline  # finalize's start time splits the engine's memory from finalize's

    started: list[float] = []
    real = pipeline.finalize
    pipeline.finalize = lambda *a, **k: started.append(time.time()) or real(*a, **k)
    res = curator.run(curator.load_recipe(recipe_text(paths, 2), base_dir=paths[0].parent), out / "run", quiet=True)
    return res.counts["kept"], started[0] if started else None, res.manifest["timings"]


def _hf_lengths(batch: dict) -> list[int]:
    """prompt + response characters per row of a batch, in either layout."""
    if "messages" in batch:
        return [sum(len(t["content"]) for t in m) for m in batch["messages"]]
    return [len(p) + len(r) for p, r in zip(batch["prompt"], batch["response"])]


def run_hf(paths: list[Path], out: Path, equal: bool) -> int:
    import datasets  # the system under test

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=[str(p) for p in paths], split="train", cache_dir=str(out / "c"))
    if equal:
        seen: set[str] = set()  # across batches: one process for the duplicate-aware map
        ds = ds.map(lambda b: {"keep": [row_logic(p, r, seen) for p, r in zip(b["prompt"], b["response"])]},
                    batched=True, batch_size=100_000)
        ds = ds.filter(lambda b: b["keep"], batched=True, num_proc=2)
    else:
        ds = ds.filter(lambda b: [n <= MAX_CHARS for n in _hf_lengths(b)], batched=True)
    ds.save_to_disk(str(out / "hf-out"))
    return len(ds)


def run_datatrove(paths: list[Path], out: Path, equal: bool) -> int:
    from datatrove.executor import LocalPipelineExecutor  # the system under test (the [bench] extra)
    from datatrove.pipeline.filters import LambdaFilter  # the system under test (the [bench] extra)
    from datatrove.pipeline.readers import JsonlReader  # the system under test (the [bench] extra)
    from datatrove.pipeline.writers import JsonlWriter  # the system under test (the [bench] extra)

    seen: set[str] = set()  # per worker process: each sees only its own file's duplicates

    def keep(doc) -> bool:
        prompt = doc.metadata.get("prompt", "")
        return row_logic(prompt, doc.text, seen) if equal else len(prompt) + len(doc.text) <= MAX_CHARS

    pipeline = [JsonlReader(str(paths[0].parent), glob_pattern="part-*.jsonl", text_key="response"),
                LambdaFilter(keep), JsonlWriter(str(out / "dt-out"))]
    LocalPipelineExecutor(pipeline, tasks=len(paths), workers=2, logging_dir=str(out / "dt-logs"),
                          skip_completed=False).run()
    return sum(1 for f in (out / "dt-out").glob("*.jsonl*") for _ in gzip.open(f, "rt"))


def run_pyarrow(paths: list[Path], out: Path) -> int:
    """Plain pyarrow: read, the same normalisation/hashing/stats, filter, write Parquet."""
    import pyarrow as pa  # the system under test
    import pyarrow.compute as pc  # the system under test
    import pyarrow.json as pajson  # the system under test
    import pyarrow.parquet as pq  # the system under test

    table = pa.concat_tables([pajson.read_json(p) for p in paths])
    prompt = pc.utf8_normalize(table.column("prompt").combine_chunks(), "NFC")
    response = pc.utf8_normalize(table.column("response").combine_chunks(), "NFC")
    norm = pc.utf8_lower(pc.binary_join(pc.utf8_split_whitespace(pc.binary_join_element_wise(prompt, response, "\n")), " "))
    ids = [hashlib.sha256(json.dumps({"messages": None, "prompt": p, "response": r}, sort_keys=True,
                                     ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
           for p, r in zip(prompt.to_pylist(), response.to_pylist())]
    keys = [hashlib.sha1(n.encode()).hexdigest()[:16] for n in norm.to_pylist()]
    seen: set[str] = set()
    dup = []
    for sid, key in zip(ids, keys):
        dup.append(sid in seen or key in seen)
        seen.update((sid, key))
    char_len = pc.add(pc.utf8_length(prompt), pc.utf8_length(response))
    keep = pc.and_(pc.invert(pa.array(dup)), pc.less_equal(char_len, MAX_CHARS))
    result = pa.table({"sample_id": ids, "prompt": prompt, "response": response}).filter(keep)
    pq.write_table(result, out / "pyarrow.parquet")
    return result.num_rows


def _floor_block(data: bytes, writers: dict) -> int:
    """The floor's work on whole JSONL lines (see ``run_floor``), appended to ``writers``; rows kept."""
    import numpy as np  # the system under test
    import pyarrow as pa  # the system under test
    import pyarrow.compute as pc  # the system under test
    import pyarrow.json as pajson  # the system under test

    def spans(text: pa.Array) -> tuple[memoryview, list[int]]:
        """A string array's data and its rows' offsets."""
        offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset:text.offset + len(text) + 1]
        return memoryview(text.buffers()[2]), offsets.tolist()

    table = pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=len(data) + 1))
    columns = {}
    for name in ("prompt", "response"):  # NFC where a column holds more than ASCII
        text = table.column(name).combine_chunks()
        columns[name] = text if pc.all(pc.string_is_ascii(text)).as_py() else pc.utf8_normalize(text, "NFC")
    (pv, po), (rv, ro) = spans(columns["prompt"]), spans(columns["response"])
    ids, first, seen = [], [], writers["seen"]
    for a, b, c, d in zip(po[:-1], po[1:], ro[:-1], ro[1:]):
        h = hashlib.sha256(pv[a:b])  # one sha256 per row over its text (the sample id)
        h.update(rv[c:d])
        ids.append(h.digest())
        key = hashlib.sha1(rv[c:d]).digest()  # one sha1 per row over its response as read (duplicates)
        first.append(key not in seen)
        seen.add(key)
    canonical = pa.table({"sample_id": pa.array(ids, pa.binary(32)), **columns})
    kept = canonical.filter(pc.and_(pa.array(first), pc.less_equal(
        pc.add(pc.utf8_length(columns["prompt"]), pc.utf8_length(columns["response"])), MAX_CHARS)))
    writers["canonical"].write_table(canonical)  # the copy resume reads
    writers["dataset"].write_table(kept)  # the output
    return kept.num_rows


def _floor_file(path: Path, out: Path) -> int:
    """The floor's work on one input file, in blocks of about 16 MB of whole lines; rows kept."""
    import pyarrow as pa  # the system under test

    from curator.allocator import keep_freed_memory  # a block reuses the last one's pages (this VM's faults)

    keep_freed_memory()
    schema = pa.schema([("sample_id", pa.binary(32)), ("prompt", pa.string()), ("response", pa.string())])
    paths = {name: out / f"{path.stem}-{name}.arrow" for name in ("canonical", "dataset")}
    sinks = {name: pa.OSFile(str(p), "wb") for name, p in paths.items()}
    writers: dict = {name: pa.ipc.new_stream(sink, schema) for name, sink in sinks.items()}
    writers["seen"], kept, tail = set(), 0, b""
    digest = hashlib.sha256()  # the manifest's input hash
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            digest.update(chunk)
            cut = chunk.rfind(b"\n") + 1
            block, tail = tail + chunk[:cut], chunk[cut:]
            kept += _floor_block(block, writers) if block else 0
    kept += _floor_block(tail, writers) if tail.strip() else 0
    for name in paths:
        writers[name].close()
        sinks[name].close()
        with open(paths[name], "rb") as fh:  # the manifest's output hashes
            hashlib.file_digest(fh, "sha256")
    return kept


def run_floor(paths: list[Path], out: Path) -> int:
    """A lower bound on any engine with curator's guarantees: only the work they cannot skip, each step with
    the fastest library call, one process per file on every core, blocks of 16 MB, and less of it than the guarantees need:
    read and parse the JSON (as bare HF does), sha256 the input file, NFC, one sha256 per row over its text
    (the sample id), one sha1 per row over its response as read (duplicates within a file: no folding), an uncompressed
    Arrow copy of every row (what resume reads) and of the kept rows (the dataset), sha256 of both. No ledger,
    statistics, scores, shard reduce, folding or canonical JSON literals."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(len(paths), os.cpu_count() or 1)) as pool:
        return sum(pool.map(_floor_file, paths, [out] * len(paths)))


def child(system: str, data: Path, out: Path) -> None:
    paths = sorted(data.glob("part-*.jsonl"))
    t0 = time.perf_counter()
    finalize_at, phases = None, None
    if system == "curator":
        kept, finalize_at, phases = run_curator(paths, out)
    elif system in ("hf", "hf-equal"):
        kept = run_hf(paths, out, system == "hf-equal")
    elif system in ("datatrove", "datatrove-equal"):
        kept = run_datatrove(paths, out, system == "datatrove-equal")
    elif system == "floor":
        kept = run_floor(paths, out)
    else:
        kept = run_pyarrow(paths, out)
    print(json.dumps({"seconds": time.perf_counter() - t0, "kept": kept, "finalize_at": finalize_at, "phases": phases}))


# -- the parent: interleaved rounds, RSS sampling, the table ----------------------------------------------


def tree_rss(pid: int) -> int:
    """Summed resident set size (bytes) of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    children.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack += children.get(p, [])
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


def measure(system: str, data: Path, out: Path) -> dict:
    """Run one system in a child process; its result plus wall time and peak RSS (before finalize, too)."""
    cmd = [sys.executable, "-m", "benchmarks.perf.engine", "--child", system, "--data", str(data), "--out", str(out)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples: list[tuple[float, int]] = []

    def sample() -> None:
        while proc.poll() is None:
            samples.append((time.time(), tree_rss(proc.pid)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{system} failed (rc {proc.returncode}); run: {' '.join(cmd)}")
    result = json.loads(stdout.strip().splitlines()[-1])
    cut = result["finalize_at"]
    return {**result, "wall": time.time() - t0, "peak": max(r for _, r in samples),
            "engine_peak": max((r for t, r in samples if t < cut), default=0) if cut else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[300_000, 1_000_000])
    ap.add_argument("--rounds", type=int, default=2, help="best of this many runs per system, interleaved")
    ap.add_argument("--systems", nargs="+", default=[*BARE, *EQUAL], choices=[*BARE, *EQUAL, *FLOOR])
    ap.add_argument("--fixed-cost", action="store_true", help="time a 1-row model-free run (and nothing else)")
    ap.add_argument("--files", type=int, default=2, help="input files the rows are split over (1: one big file)")
    ap.add_argument("--layout", choices=LAYOUTS, default="prompt_response",
                    help="rows as prompt/response columns or as two-turn conversations (curator and hf only)")
    ap.add_argument("--child", choices=[*BARE, *EQUAL, *FLOOR], help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.data, args.out)
    if args.fixed_cost:
        return fixed_cost(args.rounds * 5)
    if args.layout != "prompt_response" and set(args.systems) - {"curator", "hf"}:
        ap.error("--layout messages: only the curator and hf systems read conversations (--systems curator hf)")
    for rows in args.rows:
        work = Path(tempfile.mkdtemp(prefix="curator-bench-"))
        try:
            paths = make_inputs(work, rows, files=args.files, layout=args.layout)
            size = sum(p.stat().st_size for p in paths)
            best: dict[str, dict] = {}
            load = [os.getloadavg()[0]]
            for r in range(args.rounds):
                for system in (args.systems if r % 2 == 0 else args.systems[::-1]):
                    out = work / f"{system}-{r}"
                    out.mkdir()
                    result = measure(system, work, out)
                    shutil.rmtree(out, ignore_errors=True)
                    if system not in best or result["seconds"] < best[system]["seconds"]:
                        best[system] = result
                    load.append(os.getloadavg()[0])
            report(rows, size, args.rounds, load, best, args.layout)
        finally:
            shutil.rmtree(work, ignore_errors=True)


LIBRARIES = "pyarrow, numpy, duckdb, pyarrow.compute, pyarrow.parquet, pyarrow.json, pyarrow.ipc, pandas, yaml, click"


def fixed_cost(rounds: int) -> None:
    """Wall seconds, start to exit, of ``curator run`` on one JSONL row (normalize -> quality -> patterns ->
    decide, 8 shards) against importing the libraries that path cannot avoid, interleaved; medians."""
    work = Path(tempfile.mkdtemp(prefix="curator-fixed-"))
    try:
        (work / "d.jsonl").write_text(json.dumps({"prompt": "hi", "response": "hello there"}) + "\n")
        (work / "r.yaml").write_text("curator: 1\nname: tiny\ninputs: [{path: d.jsonl}]\nstages:\n"
                                     "  - use: normalize\n  - use: quality\n  - use: patterns\n  - use: decide\n"
                                     "    with: {drop_if: [\"is_duplicate\"]}\n")
        cmds = {"curator run (1 row)": [sys.executable, "-m", "curator.cli", "run", "r.yaml", "-o", "run", "-q"],
                "import the libraries": [sys.executable, "-c", f"import {LIBRARIES}"]}
        times: dict[str, list[float]] = {name: [] for name in cmds}
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's curator
        for _ in range(rounds):
            for name, cmd in cmds.items():
                shutil.rmtree(work / "run", ignore_errors=True)
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=work, check=True, capture_output=True, env=env)
                times[name].append(time.perf_counter() - t0)
        med = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        print(f"fixed cost, median of {rounds} interleaved runs, load average {os.getloadavg()[0]:.1f}:")
        for name, t in times.items():
            print(f"  {name}: {med[name]:.2f} s (min {min(t):.2f}, max {max(t):.2f})")
        print(f"  curator's own share: {med['curator run (1 row)'] - med['import the libraries']:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(rows: int, size: int, rounds: int, load: list[float], best: dict[str, dict], layout: str) -> None:
    ours = best.get("curator", {}).get("seconds")
    print(f"\n{rows:,} rows ({layout}, {size / 2**20:.0f} MiB JSONL), best of {rounds} interleaved, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} at start, {min(load):.1f}-{max(load):.1f} during")
    print("| system | seconds | rows/s | curator speed vs this | peak RSS (MiB) | kept | process wall (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for system, res in best.items():
        ratio = f"{res['seconds'] / ours:.2f}x" if ours else "-"
        peak = f"{res['peak'] / 2**20:.0f}"
        if res.get("engine_peak"):
            peak += f" (engine {res['engine_peak'] / 2**20:.0f})"
        print(f"| {system} | {res['seconds']:.1f} | {rows / res['seconds']:,.0f} | {ratio} | {peak} | "
              f"{res['kept']:,} | {res['wall']:.1f} |")
    if best.get("curator", {}).get("phases"):
        print("curator phases (wall s, manifest timings):", ", ".join(
            f"{k} {v:.1f}" for k, v in best["curator"]["phases"].items()))


if __name__ == "__main__":
    main()

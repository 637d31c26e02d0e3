"""Self-rollouts: k per prompt with per-(prompt, j) seeds, stored in the ``rollouts`` artifact.

Identity (H = ``curator.hashing.sha256_parts``): ``group_id = H("rollout-group-v1", model fingerprint,
rendered prompt ids, generation params)``, ``rollout_id = H(group_id, j)``, and rollout j is sampled with
``rollout_seed(seed, group_id, j)``. Rollouts of a prompt are generated in fixed blocks
(j in [b·block, (b+1)·block)), so rollout j is the same whatever the batch and whatever k: raising k from
8 to 64 only generates blocks 1..7. Backends: ``transformers`` (``curator.ml.generate.BlockSampler``,
bit-identical) and ``vllm`` (optional, GPU; ``filters.hardness.vllm_sampler``). The sampling parameters
are always the ones passed in, never the model's ``generation_config.json``. The store is shared by every
stage fingerprint (and by ``rebalance``'s benign rollouts); parts are written atomically, never rewritten.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from curator.errors import RecipeError
from curator.hashing import sha256_parts, sha256_text
from curator.keyed_store import KeyedStore
from curator.ml.sampling import Sampling
from curator.progress import progress_bar
from curator.stage import Artifact
from filters.hardness.verdicts import pair_key

BACKENDS = ("transformers", "vllm")
ROLLOUTS = Artifact("rollouts", "cache/rollouts", "rollout_id",
                    "sampled rollouts per prompt (group_id, j) with text, finish reason and seed")
ROLLOUT_SCHEMA = pa.schema([
    ("rollout_id", pa.string()), ("group_id", pa.string()), ("pair_key", pa.string()), ("prompt", pa.string()),
    ("j", pa.int64()), ("text", pa.string()), ("finish_reason", pa.string()), ("n_tokens", pa.int64()),
    ("seed", pa.int64()), ("model_fp", pa.string()), ("gen_params", pa.string())])


@dataclass(frozen=True)
class GenParams(Sampling):
    """Everything that fixes a rollout besides the model and prompt: the sampling parameters and these."""

    seed: int = 0
    backend: str = "transformers"
    dtype: str = "float32"
    block: int = 8  # rollouts j in [b*block, (b+1)*block) of a prompt are generated together

    def __post_init__(self):
        if (self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1
                or self.block < 1):
            raise RecipeError(f"bad sampling parameters {self}: need temperature >= 0, 0 < top_p <= 1, "
                              "top_k >= 0, max_new_tokens >= 1, block >= 1")
        if self.backend not in BACKENDS:
            raise RecipeError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def sampling(self) -> Sampling:
        """The sampling parameters alone."""
        return Sampling(self.temperature, self.top_p, self.top_k, self.max_new_tokens)


def check_backend(backend: str) -> None:
    """Fail before any model loads when ``vllm`` is asked for but not installed."""
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RecipeError("backend 'vllm' needs the vllm package and a GPU (`pip install vllm`); "
                          "or use backend: transformers")


def check_chat_template(model_ref: str, stage: str) -> None:
    """``RecipeError`` before anything is sampled when the model's tokenizer has no chat template."""
    from transformers import AutoTokenizer  # start-up time: transformers

    from curator.ml.models import resolve_model  # start-up time: torch

    spec = resolve_model(model_ref)
    if not getattr(AutoTokenizer.from_pretrained(spec.path, local_files_only=True), "chat_template", None):
        raise RecipeError(f"{stage}: the model {model_ref!r} has no chat template (none in {spec.path}), so its "
                          "answers to chat prompts cannot be sampled. Use an instruct/chat model (`model: default` "
                          "is one), or add the model's `chat_template` to its tokenizer_config.json.")


def rollout_seed(seed: int, group_id: str, j: int) -> int:
    """63-bit seed of rollout j of a prompt: the first 8 bytes of sha256(seed, group, j), halved."""
    return int(sha256_text(int(seed), group_id, int(j))[:16], 16) >> 1


def rollout_id(group_id: str, j: int) -> str:
    return sha256_parts(group_id, str(j))


def rollout_store(directory: str | Path) -> KeyedStore:
    """The ``rollouts`` artifact's store in ``directory``."""
    return KeyedStore(directory, ROLLOUTS.key, ROLLOUT_SCHEMA)


_VLLM: dict[tuple[str, str], object] = {}  # one vLLM engine per (model, dtype) per process


class RolloutGenerator:
    """k rollouts per prompt through the store in ``directory``: only (prompt, j) pairs not stored yet
    are generated."""

    def __init__(self, directory: str | Path, model_ref: str, backend: str = "transformers", device: str = "auto",
                 dtype: str = "float32", quiet: bool = True):
        from curator.ml.models import resolve_model  # start-up time: torch

        self.spec = resolve_model(model_ref)
        self.backend, self.device, self.dtype = backend, device, dtype
        self.quiet = quiet
        self.store = rollout_store(directory)
        self._sampler = None
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # start-up time: transformers

            self._tokenizer = AutoTokenizer.from_pretrained(self.spec.path, local_files_only=True)
        return self._tokenizer

    def sampler(self):
        """The backend for this model; a vLLM engine is shared by every generator in the process."""
        if self._sampler is None:
            if self.backend == "vllm":
                from filters.hardness.vllm_sampler import VLLMSampler  # optional backend (torch at import)

                key = (self.spec.fingerprint, self.dtype)
                if key not in _VLLM:
                    _VLLM[key] = VLLMSampler(self.spec.path, self.tokenizer, self.dtype)
                self._sampler = _VLLM[key]
            else:
                from curator.ml.generate import BlockSampler  # start-up time: torch
                from curator.ml.models import load_model  # start-up time: torch

                m = load_model(self.spec, device=self.device, dtype=self.dtype)
                self._sampler = BlockSampler(m.model, m.tokenizer, m.device)
        return self._sampler

    def group_id(self, prompt_ids: list[int], gen: GenParams) -> str:
        return sha256_parts("rollout-group-v1", self.spec.fingerprint, json.dumps(prompt_ids), gen.to_json())

    def rollouts(self, prompts: Sequence[str | list[dict]], k: int, gen: GenParams) -> list[list[dict]]:
        """For each prompt (text or chat messages), its rollouts j = 0..k-1 as store rows."""
        from curator.ml.chat import render_generation_prompt  # start-up time: torch

        gen = GenParams(**{**asdict(gen), "backend": self.backend, "dtype": self.dtype})
        rendered = [render_generation_prompt(self.tokenizer, p) for p in prompts]
        groups = [self.group_id(ids, gen) for ids in rendered]
        wanted = {rollout_id(g, j): (i, j) for i, g in enumerate(groups) for j in range(k)}
        have = self.store.get(list(wanted))
        blocks = sorted({(i, j // gen.block) for rid, (i, j) in wanted.items() if rid not in have})
        with progress_bar("rollouts", len(blocks) * gen.block, self.quiet) as advance:
            for s in range(0, len(blocks), 8):  # one stored part per 8 blocks: a killed run keeps them
                chunk = blocks[s:s + 8]
                js = [range(b * gen.block, (b + 1) * gen.block) for _, b in chunk]
                seeds = [[rollout_seed(gen.seed, groups[i], j) for j in jr] for (i, _), jr in zip(chunk, js)]
                samples = self.sampler().sample([(rendered[i], sd) for (i, _), sd in zip(chunk, seeds)],
                                                gen.sampling())
                rows = []
                for (i, _), jr, sds, smps in zip(chunk, js, seeds, samples):
                    text = prompts[i] if isinstance(prompts[i], str) else json.dumps(prompts[i])
                    for j, sd, smp in zip(jr, sds, smps):
                        rows.append({"rollout_id": rollout_id(groups[i], j), "group_id": groups[i],
                                     "pair_key": pair_key(text, smp.text), "prompt": text, "j": j, "text": smp.text,
                                     "finish_reason": smp.finish_reason, "n_tokens": smp.n_tokens, "seed": sd,
                                     "model_fp": self.spec.fingerprint, "gen_params": gen.to_json()})
                self.store.add(rows)
                have.update({r["rollout_id"]: r for r in rows})
                advance(len(chunk) * gen.block)
        return [[have[rollout_id(g, j)] for j in range(k)] for g in groups]

"""The optional ``vllm`` rollout backend (GPU): one seeded request per row, ``SamplingParams(seed=row seed)``.

Reproducible statistically, not bitwise (the ``transformers`` backend, ``curator.ml.generate.BlockSampler``,
is bit-identical); the sampling parameters are the ones passed in, never the model's generation config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from curator.errors import RecipeError
from curator.ml.generate import Sample, Sampling


class VLLMSampler:
    """A vLLM engine with the ``BlockSampler`` interface: ``sample(blocks, sampling)``, ``n_rows``."""

    def __init__(self, model_path: str | Path, tokenizer, dtype: str = "bfloat16"):
        try:
            from vllm import LLM  # optional dependency (GPU)
        except ImportError as exc:
            raise RecipeError("hardness backend 'vllm' needs the vllm package (GPU); install it with "
                              "`pip install vllm`, or use backend: transformers") from exc
        # Half the GPU: guard-model judges load in the same process after the rollouts of each batch.
        self.llm = LLM(model=str(model_path), dtype=dtype, seed=0, enforce_eager=True, trust_remote_code=False,
                       gpu_memory_utilization=0.5)
        self.tokenizer = tokenizer
        self.n_rows = 0

    def sample(self, blocks: Sequence[tuple[list[int], list[int]]], sampling: Sampling) -> list[list[Sample]]:
        """``blocks`` = (prompt token ids, one seed per row); returns the samples per block."""
        from vllm import SamplingParams  # optional dependency (GPU)
        from vllm.inputs import TokensPrompt  # optional: vllm

        rows = [(ids, seed) for ids, seeds in blocks for seed in seeds]
        params = [SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k or -1, max_tokens=sampling.max_new_tokens, seed=seed)
                  for _, seed in rows]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p, _ in rows], params, use_tqdm=False)
        self.n_rows += len(rows)
        flat = iter([Sample(o.outputs[0].text, "stop" if o.outputs[0].finish_reason == "stop" else "length",
                            len(o.outputs[0].token_ids)) for o in outs])
        return [[next(flat) for _ in seeds] for _, seeds in blocks]

"""Reference artifacts built from paired anchors (harmful prompt, compliant answer, refusal).

``AnchorReferenceStage`` is a model score stage with a reference computed once from the training split of
the anchor pairs (``compute_reference``) and stored as
``$CURATOR_HOME/directions/<reference_name>/<key>.safetensors``; key = hash(format, model fingerprint,
anchor-set sha256, split record, ``max_length``, dtype, ``reference_params()``). The file carries
string metadata and ``curator_sha256`` (sha256 of the tensors), verified on every load; the stage
fingerprint records that sha256.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import torch
from safetensors.torch import save_file

from curator.errors import InputError
from curator.hashing import sha256_text
from curator.io import atomic_path
from curator.ml.lora import HASH_KEY, load_verified, tensors_sha256
from curator.ml.models import curator_home, model_inputs
from curator.refdata.anchors import read_user_table, split, table_sha256, uncensorbench_pairs
from filters.base import ModelScoreStage

PAIR_COLUMNS = ("prompt", "compliant", "refusal")


def anchor_pairs(anchors: str, test_fraction: float, seed: int) -> tuple[pa.Table, pa.Table, dict, str]:
    """(train, test, split record, sha256 of the whole set): ``"default"`` = UncensorBench's 150 pairs,
    or a file (JSONL/Parquet/CSV/HF dir) with columns ``prompt, compliant, refusal``."""
    table = uncensorbench_pairs() if anchors == "default" else read_user_table(anchors)
    missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"anchor file {anchors}: needs columns {list(PAIR_COLUMNS)} (harmful prompt, compliant "
                         f"answer, refusal); missing {missing}, found {table.column_names}")
    table = table.select(list(PAIR_COLUMNS)).cast(pa.schema([(c, pa.string()) for c in PAIR_COLUMNS]))
    train, test, record = split(table, test_fraction, seed)
    if train.num_rows < 2:
        raise InputError(f"anchor set {anchors}: only {train.num_rows} training pairs after the split; need >= 2")
    return train, test, record, table_sha256(table)


def check_anchor_source(anchors: str) -> None:
    if anchors != "default" and not Path(anchors).exists():
        raise InputError(f"anchors: {anchors!r} is neither 'default' nor an existing file; give a JSONL/Parquet/"
                         "CSV file or HF dataset folder with columns prompt, compliant, refusal")


def artifact_key(**parts) -> str:
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:20]


def save_artifact(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> str:
    """Atomically write ``tensors`` with string metadata and ``curator_sha256``; returns that sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    meta[HASH_KEY] = tensors_sha256(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return meta[HASH_KEY]


def load_artifact(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load and verify; unreadable or tampered files are an ``InputError`` naming the file."""
    return load_verified(path, "reference artifact", "Delete it and rebuild (`curator directions build`).")


class AnchorReferenceStage(ModelScoreStage):
    """Params need ``anchors``, ``anchor_test_fraction``, ``anchor_seed``, ``batch_size``, ``max_length``.
    Subclasses set ``reference_name`` and implement ``compute_reference``."""

    reference_name: ClassVar[str]  # artifact name, directory under $CURATOR_HOME/directions, fingerprint key
    artifact_format: ClassVar[int] = 1

    def anchor_source(self) -> str:
        """``"default"`` or the anchor file, confined to the recipe's allowed roots like inputs."""
        anchors = self.params.anchors
        return anchors if anchors == "default" else str(self.context.data_path(anchors, f"{self.name}.with.anchors"))

    @cached_property
    def anchor_split(self) -> tuple[pa.Table, pa.Table, dict, str]:
        """(train, test, split record, anchor-set sha256) of the paired anchors."""
        return anchor_pairs(self.anchor_source(), self.params.anchor_test_fraction, self.params.anchor_seed)

    def check_inputs(self, schema: pa.Schema) -> None:
        super().check_inputs(schema)
        check_anchor_source(self.anchor_source())

    def reference_params(self) -> dict:
        """Parameters, beyond the anchors, model and ``max_length``, that change the reference."""
        return {}

    def compute_reference(self, train: pa.Table) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, extra metadata) from the anchors' training split."""
        raise NotImplementedError

    def artifact_path(self) -> Path:
        _, _, record, sha = self.anchor_split
        key = artifact_key(format=self.artifact_format, model=self.model_spec.fingerprint, anchors=sha, split=record,
                           max_length=self.params.max_length, dtype=self.context.dtype, **self.reference_params())
        return curator_home() / "directions" / self.reference_name / f"{key}.safetensors"

    def build_artifacts(self, force: bool = False) -> dict[str, str]:
        """Build the reference once (verify it when present); ``{reference_name: path}``."""
        path = self.artifact_path()
        if path.is_file() and not force:
            load_artifact(path)
            return {self.reference_name: str(path)}
        train, _, record, sha = self.anchor_split
        tensors, extra = self.compute_reference(train)
        meta = {"kind": f"{self.name} reference", "format": self.artifact_format, "model": self.context.model,
                "model_fingerprint": self.model_spec.fingerprint, "anchors": self.params.anchors,
                "anchors_sha256": sha, "split": record, "max_length": self.params.max_length,
                **self.reference_params(), **extra}
        save_artifact(path, tensors, meta)
        return {self.reference_name: str(path)}

    def reference(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The verified reference (tensors, metadata), built on first use."""
        self.build_artifacts()
        return load_artifact(self.artifact_path())

    def fingerprint_inputs(self) -> dict:
        """Model fingerprint and the reference's sha256 (built here on first use)."""
        _, meta = self.reference()
        return {**model_inputs(self.model_spec), f"{self.reference_name}_sha256": meta[HASH_KEY]}

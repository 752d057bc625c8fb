"""Hugging Face directories: exact round trips from transformers; each refusal names its cause."""

import json
import shutil

import numpy as np
import pytest
import torch
from model_factory import canonical_weights, tiny_hf_model
from safetensors.numpy import load_file, save_file

from hardwire.errors import ModelFormatError
from hardwire.gen.frontends import load_model
from hardwire.gen.frontends.huggingface import hf_tensor_name
from hardwire.gen.model import tensor_names


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A saved tiny model to copy and damage: ``(path, torch model)``."""
    return tiny_hf_model(tmp_path_factory.mktemp("hf"), seed=3)


def _copy(base, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(base[0], path)
    return path


def _assert_equal_to_torch(loaded, torch_model):
    spec, want = canonical_weights(torch_model)
    assert sorted(loaded.weights) == sorted(want) == sorted(tensor_names(loaded.spec))
    for name, array in want.items():
        got = loaded.weights[name]
        assert got.dtype == np.float32
        assert np.array_equal(got, array), name


@pytest.mark.parametrize("style", [4, 5])
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip(tmp_path, style, tied):
    path, torch_model = tiny_hf_model(tmp_path, tied=tied, transformers_style=style,
                                      rope_theta=5000.0, norm_eps=1e-4, seed=style + tied)
    config = json.loads((path / "config.json").read_text())
    assert ("rope_parameters" in config) == (style == 5)
    loaded = load_model(path)
    spec = loaded.spec
    assert (spec.dim, spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.head_dim) \
        == (48, 2, 3, 1, 16)
    assert (spec.ffn_dim, spec.vocab_size, spec.max_seq_len) == (80, 61, 37)
    assert spec.rope_theta == 5000.0 and spec.norm_eps == 1e-4
    assert spec.tied_embeddings == tied and ("head" in loaded.weights) != tied
    assert spec.rope_pairing == "half" and (spec.bos_id, spec.eos_id) == (1, 2)
    assert loaded.format == "huggingface" and loaded.block_quantized == {}
    _assert_equal_to_torch(loaded, torch_model)
    text = "the Lord said, Let there be light"
    ids = loaded.tokenizer.encode(text)
    assert len(ids) == len(text) and loaded.tokenizer.decode(ids) == text
    assert loaded.tokenizer.pieces[ids[0]] == "t"


def test_sharded_index(tmp_path):
    path, torch_model = tiny_hf_model(tmp_path, max_shard_size="20KB", seed=7)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert not (path / "model.safetensors").exists()
    assert len(set(index["weight_map"].values())) > 2
    _assert_equal_to_torch(load_model(path), torch_model)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_converts_exactly(tmp_path, dtype):
    _, torch_model = tiny_hf_model(tmp_path / "src", seed=11)
    torch_model.to(dtype).save_pretrained(tmp_path / "half", safe_serialization=True)
    loaded = load_model(tmp_path / "half")
    for name in tensor_names(loaded.spec):
        want = torch_model.state_dict()[hf_tensor_name(name)].float().numpy()
        assert np.array_equal(loaded.weights[name], want), name


def test_eos_list_and_head_dim_from_config(tmp_path):
    path, _ = tiny_hf_model(tmp_path, dim=40, n_heads=4, n_kv_heads=2, ffn_dim=56, seed=2)
    config = json.loads((path / "config.json").read_text())
    config["eos_token_id"] = [7, 2]
    config.pop("head_dim")
    (path / "config.json").write_text(json.dumps(config))
    loaded = load_model(path)
    assert loaded.spec.eos_id == 7 and loaded.spec.head_dim == 10


def test_no_tokenizer_json(tmp_path):
    path, _ = tiny_hf_model(tmp_path, tokenizer=False)
    assert load_model(path).tokenizer is None


# --- refusals: (what to do to a copy of the base model, file named, field named) -------------

def _config(**changes):
    def damage(path):
        config = json.loads((path / "config.json").read_text())
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        (path / "config.json").write_text(json.dumps(config))
    return damage


def _tensors(edit):
    def damage(path):
        tensors = load_file(path / "model.safetensors")
        edit(tensors)
        save_file(tensors, path / "model.safetensors")
    return damage


def _raw(edit):
    def damage(path):
        f = path / "model.safetensors"
        f.write_bytes(edit(f.read_bytes()))
    return damage


def _set(name, value):
    def edit(tensors):
        tensors[name] = value(tensors[name]) if callable(value) else value
    return edit


def _nan(array):
    array = array.copy()
    array[1, 2] = np.nan
    return array


def _pickle_only(path):
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")


def _header_size(blob):
    return (len(blob) * 2).to_bytes(8, "little") + blob[8:]


def _escaping_index(path):
    (path / "model.safetensors").rename(path / "other.safetensors")
    index = {"weight_map": {hf_tensor_name(n): "../other.safetensors" for n in ["embed"]}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


UP = "model.layers.1.mlp.up_proj.weight"
BAD = {
    "architecture": (_config(model_type="mistral", architectures=["MistralForCausalLM"]),
                     "config.json", "model_type"),
    "rope-scaling-5": (_config(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                "rope_theta": 1e4}),
                       "config.json", "rope_parameters.rope_type"),
    "rope-scaling-4": (_config(rope_parameters=None, rope_theta=1e4,
                               rope_scaling={"type": "dynamic", "factor": 2.0}),
                       "config.json", "rope_scaling.rope_type"),
    "bias-flag": (_config(attention_bias=True), "config.json", "attention_bias"),
    "activation": (_config(hidden_act="gelu"), "config.json", "hidden_act"),
    "negative-dim": (_config(hidden_size=-48), "config.json", "hidden_size"),
    "absurd-dim": (_config(num_hidden_layers=10**12), "config.json", "num_hidden_layers"),
    "missing-field": (_config(vocab_size=None), "config.json", "vocab_size"),
    "kv-heads": (_config(num_key_value_heads=2), "config.json", "num_key_value_heads"),
    "quantized": (_config(quantization_config={"quant_method": "gptq"}), "config.json",
                  "quantization_config"),
    "not-json": (lambda p: (p / "config.json").write_text("{oops"), "config.json", ""),
    "missing-tensor": (_tensors(lambda t: t.pop(UP)), "model", UP),
    "wrong-shape": (_tensors(_set(UP, np.zeros((80, 47), np.float32))), "model", UP),
    "nan": (_tensors(_set(UP, _nan)), "model", UP),
    "bias-tensor": (_tensors(_set("model.layers.0.self_attn.q_proj.bias",
                                  np.zeros(48, np.float32))),
                    "model.safetensors", "model.layers.0.self_attn.q_proj.bias"),
    "int-dtype": (_tensors(_set(UP, np.zeros((80, 48), np.int32))), "model.safetensors", UP),
    "truncated": (_raw(lambda b: b[:len(b) - 100]), "model.safetensors",
                  "incomplete metadata, file not fully covered"),
    "header-size": (_raw(_header_size), "model.safetensors", "header length"),
    "pickle": (_pickle_only, "pytorch_model.bin", "weights"),
    "escaping-shard": (_escaping_index, "model.safetensors.index.json",
                       "model.embed_tokens.weight"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(base, tmp_path, case):
    damage, file, field = BAD[case]
    path = _copy(base, tmp_path)
    damage(path)
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and file in message and field in message, message


def test_tied_head_must_equal_embedding(base, tmp_path):
    path = _copy(base, tmp_path)
    _config(tie_word_embeddings=True)(path)
    with pytest.raises(ModelFormatError, match="lm_head differs"):
        load_model(path)
    # An lm_head identical to the embedding is accepted and dropped.
    _tensors(lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"]}))(path)
    assert "head" not in load_model(path).weights

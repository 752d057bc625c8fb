"""The bundled KJV models load as plain Hugging Face models and behave like KJV text models."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

from hardwire.gen.model import ModelSpec

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
DATA = REPO / "data"
SLICES = ("kjv-calibration.txt", "kjv-heldout.txt")
KJV_WORDS = {"the", "and", "of", "LORD", "unto", "shall", "that", "he", "his", "God", "in"}
# name: (hidden, layers, heads, kv heads, ffn, context, tied, parameter range)
EXPECTED = {
    "kjv": (64, 4, 4, 2, 192, 128, False, range(150_000, 260_000)),
    "kjv-micro": (32, 2, 2, 1, 64, 64, True, range(10_000, 25_000)),
}


def _load(name):
    model = LlamaForCausalLM.from_pretrained(MODELS / name)
    model.eval()
    return model


def _spec(config):
    return ModelSpec(name="kjv", dim=config["hidden_size"], n_layers=config["num_hidden_layers"],
                     n_heads=config["num_attention_heads"],
                     n_kv_heads=config["num_key_value_heads"],
                     head_dim=config["head_dim"], ffn_dim=config["intermediate_size"],
                     vocab_size=config["vocab_size"],
                     max_seq_len=config["max_position_embeddings"],
                     tied_embeddings=config["tie_word_embeddings"])


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def bundled(request):
    name = request.param
    config = json.loads((MODELS / name / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(MODELS / name / "tokenizer.json"))
    return name, config, tokenizer, _load(name)


def test_config_shape(bundled):
    name, config, tokenizer, _ = bundled
    dim, layers, heads, kv_heads, ffn, context, tied, _ = EXPECTED[name]
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"],
            config["max_position_embeddings"], config["tie_word_embeddings"]) == \
        (dim, layers, heads, kv_heads, ffn, context, tied)
    assert config["head_dim"] * heads == dim
    assert config["vocab_size"] == tokenizer.get_vocab_size() == 63
    assert config["hidden_act"] == "silu" and not config["attention_bias"]


def test_parameter_count(bundled):
    name, config, _, model = bundled
    n = sum(p.numel() for p in model.parameters())
    assert n in EXPECTED[name][-1]
    assert n == _spec(config).n_params


def test_weights_file(bundled):
    name, config, _, _ = bundled
    path = MODELS / name / "model.safetensors"
    assert path.stat().st_size <= 1_000_000
    with safe_open(path, framework="pt") as f:
        names = set(f.keys())
        assert {f.get_slice(k).get_dtype() for k in names} == {"F32"}
    assert ("lm_head.weight" in names) != config["tie_word_embeddings"]
    assert f"model.layers.{config['num_hidden_layers'] - 1}.mlp.down_proj.weight" in names


@pytest.mark.parametrize("slice_name", SLICES)
def test_tokenizer_round_trip(bundled, slice_name):
    _, _, tokenizer, _ = bundled
    text = (DATA / slice_name).read_text(encoding="ascii")
    assert len(text) > 3000 and " " in text and "\n" in text
    ids = tokenizer.encode(text).ids
    assert len(ids) == len(text)  # one token per character, nothing dropped
    assert tokenizer.decode(ids) == text
    vocab = tokenizer.get_vocab()
    assert [vocab[c] for c in text[:50]] == ids[:50]


def test_vocabulary_is_the_corpus_alphabet(bundled):
    _, _, tokenizer, _ = bundled
    vocab = tokenizer.get_vocab()
    assert all(len(piece) == 1 for piece in vocab)
    assert sorted(vocab, key=vocab.get) == sorted(vocab)  # id = rank of the character
    seen = set().union(*((DATA / s).read_text(encoding="ascii") for s in SLICES))
    assert seen <= set(vocab)
    assert not any(c.isdigit() for c in vocab)


def test_greedy_continuation_looks_like_kjv(bundled):
    name, config, tokenizer, model = bundled
    line = (DATA / "kjv-heldout.txt").read_text(encoding="ascii").splitlines()[3]
    prompt = line[:24]
    x = torch.tensor([tokenizer.encode(prompt).ids])
    with torch.no_grad():
        y = model.generate(x, max_new_tokens=40, do_sample=False, pad_token_id=0)
    text = tokenizer.decode(y[0, x.shape[1]:].tolist())
    assert len(text) == y.shape[1] - x.shape[1]
    assert set(text) <= set(tokenizer.get_vocab())
    assert KJV_WORDS & set(text.replace(",", " ").replace(".", " ").split()), text


def test_heldout_loss(bundled):
    name, config, tokenizer, model = bundled
    ids = tokenizer.encode((DATA / "kjv-heldout.txt").read_text(encoding="ascii")).ids
    context = config["max_position_embeddings"]
    n = (len(ids) - 1) // context
    x = torch.tensor([ids[i * context:(i + 1) * context + 1] for i in range(n)])
    with torch.no_grad():
        logits = model(input_ids=x[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).item()
    uniform = torch.log(torch.tensor(float(config["vocab_size"]))).item()
    bound = {"kjv": 1.6, "kjv-micro": 2.2}[name]
    assert loss < bound < uniform


def _train_module():
    spec = importlib.util.spec_from_file_location("train_bundled",
                                                  REPO / "scripts" / "train_bundled.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_is_deterministic(tmp_path):
    """A fresh process and this one, same preset and steps, write byte-identical directories."""
    args = ["--preset", "kjv-micro", "--steps", "3", "--eval-windows", "2", "--threads", "1"]
    child = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train_bundled.py"), *args,
                              "--out", str(tmp_path / "a")], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        result = _train_module().train("kjv-micro", tmp_path / "b", steps=3, threads=1,
                                       eval_windows=2, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 0, output
    assert result["steps"] == 3 and result["params"] in EXPECTED["kjv-micro"][-1]
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

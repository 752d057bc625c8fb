"""The float reference model against transformers' LlamaForCausalLM (float32, eager attention)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from model_factory import tiny_hf_model

from hardwire.errors import HardwireError
from hardwire.gen.frontends import load_model
from hardwire.sim.reference import LAYER_POINTS, FloatModel, observe_points

# Odd shapes on purpose: 3 heads sharing 1 KV head, FFN and vocab not powers of two.
SHAPES = {
    "gqa3x1-tied": dict(dim=48, n_heads=3, n_kv_heads=1, ffn_dim=80, vocab=61, ctx=37,
                        n_layers=2, tied=True, norm_eps=1e-4, rope_theta=5000.0),
    "gqa4x2-untied": dict(dim=40, n_heads=4, n_kv_heads=2, ffn_dim=72, vocab=53, ctx=29,
                          n_layers=3, tied=False, norm_eps=1e-6, rope_theta=123.0),
    "mha2-untied": dict(dim=24, n_heads=2, n_kv_heads=2, ffn_dim=56, vocab=67, ctx=33,
                        n_layers=1, tied=False, norm_eps=1e-5, rope_theta=10000.0),
}


def _load(tmp_path, shape):
    """``(loaded model, its FloatModel, the torch model)`` for one of :data:`SHAPES`."""
    config = dict(SHAPES[shape])
    eps = config.pop("norm_eps")
    path, torch_model = tiny_hf_model(tmp_path, **config)
    # The factory fixes rms_norm_eps at 1e-5: set ours in the saved config and the live modules.
    config_path = path / "config.json"
    hf_config = json.loads(config_path.read_text())
    hf_config["rms_norm_eps"] = eps
    config_path.write_text(json.dumps(hf_config))
    for module in torch_model.modules():
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon = eps
    torch_model.set_attn_implementation("eager")
    loaded = load_model(path)
    assert loaded.spec.norm_eps == eps and loaded.spec.rope_theta == config["rope_theta"]
    return loaded, FloatModel(loaded), torch_model


def _tokens(n, vocab, seed=1):
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def _hf_logits(torch_model, ids):
    with torch.no_grad():
        return torch_model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_logits_match_transformers(tmp_path, shape):
    _, fm, torch_model = _load(tmp_path, shape)
    ids = _tokens(fm.spec.max_seq_len, fm.spec.vocab_size)
    want = _hf_logits(torch_model, ids)
    got = fm.logits_for(ids)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(want).max() > 1.0                  # the comparison is not between tiny numbers
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # Token by token through the KV cache gives the same logits as the whole sequence at once.
    fm.reset()
    stepped = np.stack([fm.step(t) for t in ids])
    np.testing.assert_allclose(stepped, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_greedy_matches_transformers(tmp_path, shape):
    _, fm, torch_model = _load(tmp_path, shape)
    prompt = _tokens(5, fm.spec.vocab_size, seed=2)
    n_new = fm.spec.max_seq_len - len(prompt) + 1     # fills the whole context
    with torch.no_grad():
        out = torch_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n_new,
                                   min_new_tokens=n_new, eos_token_id=None, pad_token_id=0)
    want = out[0, len(prompt):].tolist()
    assert len(want) == n_new >= 20
    assert fm.generate(prompt, n_new, stop_at_eos=False) == want


def test_generate_stops_at_eos(tmp_path):
    loaded, fm, _ = _load(tmp_path, "gqa3x1-tied")
    prompt = _tokens(3, fm.spec.vocab_size, seed=3)
    free = fm.generate(prompt, 20, stop_at_eos=False)
    eos = free[6]
    stopper = FloatModel.from_weights(dataclasses.replace(fm.spec, eos_id=eos),
                                      loaded.weights)
    assert stopper.generate(prompt, 20) == free[:free.index(eos) + 1]
    assert stopper.generate(prompt, 20, stop_at_eos=False) == free
    assert fm.generate(prompt, 0) == []


def test_interleaved_pairing(tmp_path):
    loaded, fm, _ = _load(tmp_path, "gqa4x2-untied")
    spec = fm.spec
    hd = spec.head_dim
    # Row j of a head's half-order block goes to 2j, row j + hd/2 to 2j + 1.
    order = np.empty(hd, dtype=int)
    order[0::2], order[1::2] = np.arange(hd // 2), np.arange(hd // 2, hd)
    weights = dict(loaded.weights)
    for i in range(spec.n_layers):
        for name, heads in (("wq", spec.n_heads), ("wk", spec.n_kv_heads)):
            w = weights[f"layers.{i}.{name}"]
            weights[f"layers.{i}.{name}"] = w.reshape(heads, hd, -1)[:, order].reshape(w.shape)
    permuted = dataclasses.replace(spec, rope_pairing="interleaved")
    ids = _tokens(spec.max_seq_len, spec.vocab_size)
    want = fm.logits_for(ids)
    got = FloatModel.from_weights(permuted, weights).logits_for(ids)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # The wrong pairing on the permuted weights is a different model.
    assert np.abs(FloatModel.from_weights(spec, weights).logits_for(ids) - want).max() > 1e-2


def test_observe_points(tmp_path):
    loaded, fm, _ = _load(tmp_path, "gqa3x1-tied")
    spec, w = fm.spec, loaded.weights
    seen = []
    ids = [5, 7, 11, 13]
    logits = fm.logits_for(ids[:3], observe=lambda n, a: seen.append((n, a)))
    logits = np.concatenate([logits, fm.step(ids[3], observe=lambda n, a: seen.append((n, a)))
                            [None]])
    names = observe_points(spec)
    assert len(names) == 1 + spec.n_layers * len(LAYER_POINTS) + 2
    # Three tokens at once report each point three times; the stepped token once per point.
    assert [n for n, _ in seen] == [n for n in names for _ in range(3)] + names
    by_name = {n: np.stack([a for m, a in seen if m == n]) for n in names}
    sizes = {"q": spec.q_dim, "k": spec.kv_dim, "v": spec.kv_dim, "attn_out": spec.q_dim,
             "gate": spec.ffn_dim, "up": spec.ffn_dim, "hidden": spec.ffn_dim}
    for name, value in by_name.items():
        size = spec.vocab_size if name == "logits" else sizes.get(name.split(".")[-1], spec.dim)
        assert value.shape == (4, size) and value.dtype == np.float32, name
    np.testing.assert_array_equal(by_name["embed"], w["embed"][ids])
    np.testing.assert_array_equal(by_name["logits"], logits)
    for i in range(spec.n_layers):
        p = f"layers.{i}."
        x = by_name[p + "attn_in"]
        for name in ("q", "k", "v"):                 # before RoPE: exactly the projection
            np.testing.assert_allclose(by_name[p + name], x @ w[p + "w" + name].T, atol=1e-5)
        xf = by_name[p + "ffn_in"]
        np.testing.assert_allclose(by_name[p + "gate"], xf @ w[p + "w1"].T, atol=1e-5)
        np.testing.assert_allclose(by_name[p + "up"], xf @ w[p + "w3"].T, atol=1e-5)
        gate = by_name[p + "gate"]
        np.testing.assert_allclose(by_name[p + "hidden"],
                                   gate / (1 + np.exp(-gate)) * by_name[p + "up"], atol=1e-5)
        before = by_name[f"layers.{i - 1}.resid_ffn"] if i else by_name["embed"]
        np.testing.assert_allclose(by_name[p + "resid_attn"],
                                   before + by_name[p + "attn_out"] @ w[p + "wo"].T, atol=1e-5)
        np.testing.assert_allclose(by_name[p + "resid_ffn"],
                                   by_name[p + "resid_attn"] + by_name[p + "hidden"]
                                   @ w[p + "w2"].T, atol=1e-5)
        r = by_name[p + "resid_attn"]
        rms = np.sqrt((r * r).mean(axis=1, keepdims=True) + spec.norm_eps)
        np.testing.assert_allclose(xf, r / rms * w[p + "ffn_norm"], atol=1e-5)
    np.testing.assert_allclose(by_name["final_norm"] @ w["embed"].T, logits, atol=1e-4)
    # The callback receives copies: changing one changes nothing else.
    plain = fm.logits_for(ids)
    fm.logits_for(ids, observe=lambda n, a: a.fill(np.nan))
    np.testing.assert_array_equal(fm.logits_for(ids), plain)


def test_context_limit(tmp_path):
    _, fm, _ = _load(tmp_path, "mha2-untied")
    ctx = fm.spec.max_seq_len
    ids = _tokens(ctx + 1, fm.spec.vocab_size)
    for t in ids[:ctx]:
        fm.step(t)
    assert fm.pos == ctx
    with pytest.raises(HardwireError, match=rf"context of {ctx} tokens \(max_seq_len\)"):
        fm.step(ids[ctx])
    with pytest.raises(HardwireError, match=rf"context of {ctx} tokens"):
        fm.logits_for(ids)
    with pytest.raises(HardwireError, match=rf"context of {ctx} \(max_seq_len\)"):
        fm.generate(ids[:10], ctx - 8)
    assert len(fm.generate(ids[:10], ctx - 9, stop_at_eos=False)) == ctx - 9
    fm.reset()
    assert fm.pos == 0
    np.testing.assert_array_equal(fm.step(ids[0]), fm.logits_for(ids[:1])[0])


def test_step_rewinds_and_refuses_bad_input(tmp_path):
    _, fm, _ = _load(tmp_path, "mha2-untied")
    ids = _tokens(8, fm.spec.vocab_size)
    want = fm.logits_for(ids)
    for t in [3, 4, 9]:                              # a detour, then rewind to position 5
        fm.step(t)
    got = [fm.step(ids[5], pos=5), fm.step(ids[6]), fm.step(ids[7])]
    np.testing.assert_allclose(np.stack(got), want[5:], rtol=0, atol=1e-5)
    with pytest.raises(HardwireError, match="position 9 is not in 0..8"):
        fm.step(1, pos=9)
    with pytest.raises(HardwireError, match=rf"token id {fm.spec.vocab_size} outside"):
        fm.step(fm.spec.vocab_size)
    with pytest.raises(HardwireError, match="token id -1 outside"):
        fm.logits_for([1, -1])
    with pytest.raises(HardwireError, match="at least one prompt token"):
        fm.generate([], 3)

"""The llama.cpp peer without llama.cpp: comparison logic, errors, and the whole run against a
stand-in ``llama_cpp`` module that evaluates the exported GGUF file with our float model (the real
library runs in the benchmark, not in ``make test``)."""

import ctypes
import json
import sys
import types

import numpy as np
import pytest

from hardwire.benchmarks import peers
from hardwire.errors import ConfigError, ToolchainError
from hardwire.gen.frontends import load_model
from hardwire.sim.reference import FloatModel


@pytest.fixture(scope="module")
def micro():
    return load_model("kjv-micro")


def test_compare_agreeing_tokens():
    result = peers.compare_tokens([5, 6, 7], [5, 6, 7])
    assert result == {"agree": True, "compared": 3, "first_difference": None}


def test_compare_different_lengths():
    result = peers.compare_tokens([5, 6, 7], [5, 6])
    assert not result["agree"]
    assert result["first_difference"] == {"index": 2, "ours": [7], "theirs": [],
                                          "why": "different lengths"}


def _logits(best, second, gap, vocab=8):
    row = np.zeros(vocab, dtype=np.float32)
    row[best], row[second] = 10.0, 10.0 - gap
    return row


def test_compare_near_tie():
    ours = [_logits(1, 0, 5.0), _logits(2, 3, 1e-4)]
    theirs = [ours[0] + np.float32(1e-4), _logits(3, 2, 1e-4)]
    result = peers.compare_tokens([1, 2], [1, 3], our_logits=ours, their_logits=theirs)
    diff = result["first_difference"]
    assert not result["agree"] and diff["index"] == 1
    assert (diff["ours"], diff["theirs"]) == (2, 3)
    assert diff["our_gap"] == pytest.approx(1e-4, rel=0.05)
    assert diff["their_gap"] == pytest.approx(1e-4, rel=0.05)
    assert diff["our_margin"] == pytest.approx(1e-4, rel=0.05)
    assert result["max_logit_diff"] == pytest.approx(1e-4, rel=0.05)
    assert diff["why"] == "near tie"


def test_compare_numerics_differ():
    ours = [_logits(1, 0, 5.0), _logits(2, 3, 3.0)]
    theirs = [ours[0] + np.float32(1e-4), _logits(3, 2, 3.0)]
    diff = peers.compare_tokens([1, 2], [1, 3], our_logits=ours,
                                their_logits=theirs)["first_difference"]
    assert diff["our_gap"] == pytest.approx(3.0) and diff["why"] == "numerics differ"


def test_compare_first_token_differs():
    ours, theirs = [_logits(2, 3, 4.0)], [_logits(3, 2, 4.0)]
    result = peers.compare_tokens([2], [3], our_logits=ours, their_logits=theirs)
    assert result["max_logit_diff"] == 0.0
    assert result["first_difference"]["why"] == "numerics differ"


def test_float_greedy_is_float_model_generate(micro):
    prompt = micro.tokenizer.encode("And God said")
    tokens, logits = peers.float_greedy(micro, prompt, 12)
    assert tokens == FloatModel(micro).generate(prompt, 12, stop_at_eos=False)
    assert len(logits) == 12 and [int(np.argmax(x)) for x in logits] == tokens


def test_missing_llama_cpp_is_a_toolchain_error(micro, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)     # makes `import llama_cpp` fail
    with pytest.raises(ToolchainError, match="llama-cpp-python.*make bench"):
        peers.require_llama_cpp()
    with pytest.raises(ToolchainError, match="llama-cpp-python"):
        peers.llama_cpp_peer(micro, [[1, 2]], 4, gguf_path=tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"prompts": [[]]}, "non-empty prompt"),
    ({"n_new": 0}, "n_new"),
    ({"n_new": 64}, "context of 64"),
    ({"repeats": 0}, "repeats"),
    ({"kv_types": ("Q8_0",)}, "KV cache"),
    ({"dtype": "Q4_0"}, "export type"),
    ({"threads": [0]}, "threads"),
])
def test_bad_arguments(micro, tmp_path, kwargs, match):
    args = {"prompts": [[1, 2]], "n_new": 4, **kwargs}
    with pytest.raises(ConfigError, match=match):
        peers.llama_cpp_peer(micro, args.pop("prompts"), args.pop("n_new"),
                             gguf_path=tmp_path / "m.gguf", **args)


def _fake_llama_cpp(flip_at=None):
    """A ``llama_cpp`` stand-in: ``Llama`` reads the GGUF file back with our front end and runs
    our float model; ``flip_at`` makes position ``flip_at`` prefer token 0 by a hair."""
    state = {"calls": []}

    class Perf:
        t_p_eval_ms, t_eval_ms, n_p_eval, n_eval = 0.5, 2.0, 0, 0

    class Llama:
        def __init__(self, model_path, **params):
            state["calls"].append(params)
            self._model = FloatModel(load_model(model_path))
            self._logits = None
            self.ctx = self

        def n_vocab(self):
            return self._model.spec.vocab_size

        def reset(self):
            self._model.reset()

        def eval(self, tokens):
            if self._model.pos == 0:       # the prompt as one batch, as llama.cpp does
                self._logits = self._model.logits_for(tokens)[-1]
            else:
                for t in tokens:
                    self._logits = self._model.step(t)
            if self._model.pos == flip_at:
                self._logits[0] = self._logits.max() + np.float32(1e-6)
            Perf.n_p_eval += len(tokens) if len(tokens) > 1 else 0
            Perf.n_eval += 1 if len(tokens) == 1 else 0

        def close(self):
            pass

    def llama_get_logits_ith(llm, i):
        assert i == -1
        return llm._logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def llama_perf_context_reset(llm):
        Perf.n_p_eval = Perf.n_eval = 0

    module = types.SimpleNamespace(
        __version__="0.0-fake", Llama=Llama, llama_get_logits_ith=llama_get_logits_ith,
        llama_perf_context=lambda llm: Perf, llama_perf_context_reset=llama_perf_context_reset,
        llama_print_system_info=lambda: b"FAKE = 1 |")
    return module, state


def test_peer_run_with_stand_in(micro, monkeypatch, tmp_path):
    module, state = _fake_llama_cpp()
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    prompts = [micro.tokenizer.encode(t) for t in ("In the beginning", "Jesus wept")]
    result = peers.llama_cpp_peer(micro, prompts, 8, gguf_path=tmp_path / "b" / "m.gguf",
                                  repeats=2, threads=[1, 2])
    json.dumps(result)
    assert result["agree"] and result["version"] == "0.0-fake"
    assert [(r["threads"], r["kv_cache"]) for r in result["runs"]] == \
        [(1, "F16"), (2, "F16"), (1, "F32"), (2, "F32")]
    assert [(a["kv_cache"], a["prompt"]) for a in result["agreement"]] == \
        [("F16", prompts[0]), ("F16", prompts[1]), ("F32", prompts[0]), ("F32", prompts[1])]
    assert result["agreement"][0]["ours"] == FloatModel(micro).generate(prompts[0], 8)
    assert result["agreement"][0]["max_logit_diff"] == 0.0
    for run in result["runs"]:
        assert run["tokens_per_s_per_user"] == run["decode_tokens_per_s"]["median"] > 0
        assert run["engine_decode_tokens_per_s"]["median"] == pytest.approx(7 / 2e-3)
    first = state["calls"][0]
    assert (first["n_ctx"], first["n_threads"], first["type_k"], first["type_v"]) == (64, 1, 1, 1)
    assert first["logits_all"] is False and state["calls"][2]["type_k"] == 0
    assert (tmp_path / "b" / "m.gguf").stat().st_size == result["gguf"]["bytes"]


def test_peer_run_reports_a_near_tie(micro, monkeypatch, tmp_path):
    prompt = micro.tokenizer.encode("And God said")
    module, _ = _fake_llama_cpp(flip_at=len(prompt) + 3)
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    result = peers.llama_cpp_peer(micro, prompt, 8, gguf_path=tmp_path / "m.gguf", repeats=1,
                                  threads=[1], kv_types=("F32",))
    (agreement,) = result["agreement"]
    assert not result["agree"] and agreement["first_difference"]["index"] == 3
    assert agreement["first_difference"]["theirs"] == 0

"""Peer engines run on the same model: llama.cpp (through ``llama-cpp-python``) on this CPU.

:func:`llama_cpp_peer` exports a :class:`~hardwire.gen.model.LoadedModel` to GGUF
(:func:`~hardwire.gen.export_gguf.export_gguf`), loads it in llama.cpp and generates greedily from
token ids (one ``llama_decode`` per token, argmax of the returned logits with the lowest id winning
ties, exactly like :meth:`~hardwire.sim.reference.FloatModel.generate`; no sampler, no repetition
penalty). It reports tokens/s for one user (batch 1), prompt processing apart from generation, and
compares the tokens with our float reference's greedy tokens (:func:`compare_tokens`): where they
first differ it gives both engines' logit margins, which tell a near-tie from a real mismatch.
"""

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ToolchainError
from .record import spread

__all__ = ["llama_cpp_peer", "compare_tokens", "float_greedy", "require_llama_cpp",
           "INSTALL_HINT", "KV_CACHE_TYPES"]

INSTALL_HINT = ("install it with `make bench`, or `.venv/bin/pip install "
                "'llama-cpp-python>=0.3.36'` (it builds llama.cpp from source: needs cmake and a "
                "C++ compiler, several minutes)")
#: llama.cpp KV cache element types we compare with: F16 is llama.cpp's default, F32 is exact.
KV_CACHE_TYPES = {"F32": 0, "F16": 1}      # ggml_type codes


def require_llama_cpp():
    """The ``llama_cpp`` module; :class:`~hardwire.errors.ToolchainError` saying how to get it."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ToolchainError(f"the llama.cpp peer benchmark needs the Python package "
                             f"llama-cpp-python (import llama_cpp failed: {e}); "
                             f"{INSTALL_HINT}") from None
    return llama_cpp


def float_greedy(loaded, prompt_ids, n_new):
    """Greedy tokens of our float model and the float32 logits each was chosen from.

    The same decisions as ``FloatModel(loaded).generate(prompt_ids, n_new, stop_at_eos=False)``.
    """
    from ..sim.reference import FloatModel
    model = FloatModel(loaded)
    logits = model.logits_for(list(prompt_ids))[-1]
    tokens, steps = [], []
    while len(tokens) < n_new:
        steps.append(logits)
        tokens.append(int(np.argmax(logits)))
        if len(tokens) < n_new:
            logits = model.step(tokens[-1])
    return tokens, steps


def _margin(logits):
    top = np.sort(np.asarray(logits, dtype=np.float64))[::-1]
    return float(top[0] - top[1]) if len(top) > 1 else float("inf")


def compare_tokens(ours, theirs, *, our_logits=None, their_logits=None):
    """Compare two greedy token lists (ours: the float reference; theirs: the peer).

    Returns a JSON-able dict: ``agree``, ``compared`` (the shorter length), ``first_difference``
    (``None`` or ``{index, ours, theirs}``) and, when per-step logits are given, the largest
    absolute logit difference over the steps before the first difference (``max_logit_diff``),
    each engine's top-1 minus top-2 margin and its logit gap between the two chosen tokens at the
    difference, and ``why``: ``"near tie"`` when our gap is within twice the logit difference the
    engines showed on the common prefix and that difference is under 1% of the largest logit
    (rounding picks a different winner), otherwise ``"numerics differ"`` (look at the RoPE
    pairing, epsilon, weights).
    """
    ours, theirs = [int(t) for t in ours], [int(t) for t in theirs]
    n = min(len(ours), len(theirs))
    first = next((i for i in range(n) if ours[i] != theirs[i]), None)
    result = {"agree": first is None and len(ours) == len(theirs), "compared": n,
              "first_difference": None}
    if first is None and len(ours) != len(theirs):
        result["first_difference"] = {"index": n, "ours": ours[n:n + 1], "theirs": theirs[n:n + 1],
                                      "why": "different lengths"}
    have_logits = our_logits is not None and their_logits is not None
    if have_logits:
        upto = n if first is None else first
        diffs = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                 for a, b in zip(our_logits[:upto], their_logits[:upto], strict=True)]
        result["max_logit_diff"] = max(diffs, default=0.0)
    if first is not None:
        diff = {"index": first, "ours": ours[first], "theirs": theirs[first]}
        if have_logits:
            mine, peer = np.asarray(our_logits[first]), np.asarray(their_logits[first])
            our_gap = float(mine[ours[first]]) - float(mine[theirs[first]])
            diff.update(our_margin=_margin(mine), their_margin=_margin(peer), our_gap=our_gap,
                        their_gap=float(peer[theirs[first]]) - float(peer[ours[first]]),
                        logit_diff_here=float(np.max(np.abs(mine.astype(np.float64)
                                                            - peer.astype(np.float64)))))
            # The engines' rounding noise: their largest logit difference on the common prefix
            # (at the first step, where there is none, the difference at this step).
            noise = result["max_logit_diff"] if first else diff["logit_diff_here"]
            small = noise <= 0.01 * float(np.max(np.abs(mine)))
            diff["why"] = "near tie" if small and our_gap <= 2 * noise else "numerics differ"
        result["first_difference"] = diff
    return result


class _LlamaRunner:
    """One llama.cpp context on the exported file, decoding token ids greedily."""

    def __init__(self, llama_cpp, path, *, n_ctx, threads, kv_type, seed):
        start = time.perf_counter()
        self._lib = llama_cpp
        self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx,
                                    n_ubatch=n_ctx, n_threads=threads, n_threads_batch=threads,
                                    logits_all=False, verbose=False, seed=seed, flash_attn=False,
                                    type_k=KV_CACHE_TYPES[kv_type],
                                    type_v=KV_CACHE_TYPES[kv_type])
        self.load_s = time.perf_counter() - start
        self.n_vocab = self._llm.n_vocab()

    def _last_logits(self):
        pointer = self._lib.llama_get_logits_ith(self._llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def generate(self, prompt_ids, n_new):
        """``(tokens, logits per token, timings)`` of greedy decoding after ``prompt_ids``."""
        llm, lib = self._llm, self._lib
        llm.reset()
        lib.llama_perf_context_reset(llm.ctx)
        t0 = time.perf_counter()
        llm.eval(list(prompt_ids))
        logits = self._last_logits()
        t1 = time.perf_counter()
        tokens, steps = [], []
        while True:
            steps.append(logits)
            tokens.append(int(np.argmax(logits)))
            if len(tokens) == n_new:
                break
            llm.eval([tokens[-1]])
            logits = self._last_logits()
        t2 = time.perf_counter()
        perf = lib.llama_perf_context(llm.ctx)
        timing = {"prompt_s": t1 - t0, "decode_s": t2 - t1,
                  "engine_prompt_s": perf.t_p_eval_ms / 1e3,
                  "engine_decode_s": perf.t_eval_ms / 1e3,
                  "engine_prompt_tokens": perf.n_p_eval, "engine_decode_tokens": perf.n_eval}
        return tokens, steps, timing

    def close(self):
        self._llm.close()


def _rates(timings, n_prompt, n_decode):
    def rate(n, seconds):
        return n / seconds if seconds > 0 else float("inf")
    out = {"prompt_tokens_per_s": spread([rate(n_prompt[i], t["prompt_s"])
                                          for i, t in enumerate(timings)]),
           "decode_tokens_per_s": spread([rate(n_decode, t["decode_s"]) for t in timings])}
    engine = [t for t in timings if t["engine_decode_tokens"] > 0]
    if engine:
        out["engine_decode_tokens_per_s"] = spread(
            [rate(t["engine_decode_tokens"], t["engine_decode_s"]) for t in engine])
    out["tokens_per_s_per_user"] = out["decode_tokens_per_s"]["median"]
    return out


def llama_cpp_peer(loaded, prompts, n_new, *, gguf_path, repeats=5, threads=None,
                   dtype="F32", kv_types=("F16", "F32"), seed=0):
    """Run ``loaded`` in llama.cpp and compare it with our float model; a JSON-able dict.

    ``prompts`` is a list of token-id lists (or one list); each generates ``n_new`` tokens greedily.
    The model is exported to ``gguf_path`` as ``dtype`` (F32 or F16). For every thread count in
    ``threads`` (default 1 and the machine's core count) and KV cache type in ``kv_types``
    (``"F16"``: llama.cpp's default; ``"F32"``) a fresh context runs every prompt ``repeats``
    times. Timings, per thread count and cache type, are median/min/max over all runs of:
    prompt tokens/s (one batched decode of the prompt), decode tokens/s (the ``n_new - 1``
    one-token decodes plus argmax, from the Python loop: what one user sees) and llama.cpp's own
    decode time (``llama_perf_context``, without the Python overhead). ``agreement`` holds
    :func:`compare_tokens` of every prompt and cache type against our float greedy tokens.
    Raises :class:`~hardwire.errors.ToolchainError` without ``llama_cpp``.
    """
    from ..gen.export_gguf import EXPORT_TYPES, export_gguf
    if prompts and isinstance(prompts[0], (int, np.integer)):
        prompts = [prompts]
    prompts = [[int(t) for t in p] for p in prompts]
    spec = loaded.spec
    if not prompts or not all(prompts):
        raise ConfigError("llama_cpp_peer needs at least one non-empty prompt")
    if not isinstance(n_new, int) or n_new < 1:
        raise ConfigError(f"n_new must be a positive integer, not {n_new!r}")
    longest = max(len(p) for p in prompts) + n_new - 1
    if longest > spec.max_seq_len:
        raise ConfigError(f"{spec.name}: a prompt of {longest - n_new + 1} tokens plus {n_new} new "
                          f"tokens needs {longest} positions, more than the context of "
                          f"{spec.max_seq_len}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a positive integer, not {repeats!r}")
    unknown = [k for k in kv_types if k not in KV_CACHE_TYPES]
    if unknown or not kv_types:
        raise ConfigError(f"KV cache types must be among {', '.join(KV_CACHE_TYPES)}, "
                          f"not {list(kv_types)!r}")
    if dtype not in EXPORT_TYPES:
        raise ConfigError(f"GGUF export type must be one of {', '.join(EXPORT_TYPES)}, "
                          f"not {dtype!r}")
    if threads is None:
        threads = sorted({1, os.cpu_count() or 1})
    if not threads or not all(isinstance(t, int) and t > 0 for t in threads):
        raise ConfigError(f"threads must be positive integers, not {threads!r}")
    llama_cpp = require_llama_cpp()
    path = Path(gguf_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_gguf(loaded, path, dtype=dtype)
    data = path.read_bytes()
    reference = [float_greedy(loaded, p, n_new) for p in prompts]

    runs, agreement = [], []
    for kv_type in kv_types:
        for n_threads in threads:
            runner = _LlamaRunner(llama_cpp, path, n_ctx=spec.max_seq_len, threads=n_threads,
                                  kv_type=kv_type, seed=seed)
            try:
                timings = []
                for repeat in range(repeats):
                    for p, (ours, our_logits) in zip(prompts, reference, strict=True):
                        tokens, logits, timing = runner.generate(p, n_new)
                        timings.append(timing)
                        if repeat == 0 and n_threads == threads[0]:
                            agreement.append({"prompt": p, "kv_cache": kv_type,
                                              "ours": ours, "theirs": tokens,
                                              **compare_tokens(ours, tokens,
                                                               our_logits=our_logits,
                                                               their_logits=logits)})
            finally:
                runner.close()
            runs.append({"threads": n_threads, "kv_cache": kv_type, "load_s": runner.load_s,
                         **_rates(timings, [len(p) for p in prompts] * repeats, n_new - 1)})
    return {
        "peer": "llama.cpp", "package": "llama-cpp-python",
        "version": getattr(llama_cpp, "__version__", "unknown"),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "model": spec.name,
        "gguf": {"path": str(path), "dtype": dtype, "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()},
        "n_new": n_new, "repeats": repeats, "prompts": prompts,
        "runs": runs, "agreement": agreement,
        "agree": all(a["agree"] for a in agreement),
    }

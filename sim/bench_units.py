"""cocotb bench of the whole-vector units (RMSNorm, RoPE, SwiGLU, residual add, argmax, embedding)
on their exported Verilog, one cocotb test (``unit``) for the unit the parameters name.

The design under test holds every unit side by side; unit ``name`` has the stream ports
``{name}_i`` and ``{name}_o`` (flattened to ``{name}_i__payload`` …) and the embedding also
``embedding_error``. Parameters (from :func:`hardwire.sim.cocotb_stream.params`): one key, the
unit's name, holding
``inputs`` (packed input payloads as integers), ``expected`` (one list of output elements per
input, from ``golden_ops``), ``out_bits`` and ``out_signed`` (element format of the output;
``out_count`` elements per payload), ``latency`` and ``cycles_per_vector`` (the unit's
properties), ``pauses`` (source and sink pause specs for a second pass) and, for the embedding,
``error`` (the sticky flag expected at the end). Each test runs the inputs twice: back to back
with an always-ready sink (outputs and the documented timing checked), then with random idle
cycles and backpressure (outputs checked again).
"""

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from hardwire.sim.cocotb_stream import exchange, params, pauses, start, write_result


def unpack(value, *, bits, count, signed):
    """Elements of a packed ``ArrayLayout`` payload (element ``k`` in bits ``bits*k`` …)."""
    value = int(value)
    mask = (1 << bits) - 1
    out = []
    for k in range(count):
        v = (value >> (bits * k)) & mask
        out.append(v - (1 << bits) if signed and v >> (bits - 1) else v)
    return out


async def check_unit(dut, name):
    p = params()[name]
    await start(dut)
    timing = None
    for source_pause, sink_pause in ((None, None), tuple(p["pauses"])):
        seen = await exchange(dut, inputs=p["inputs"], n_outputs=len(p["expected"]),
                              source=f"{name}_i", sink=f"{name}_o",
                              source_pause=pauses(source_pause), sink_pause=pauses(sink_pause))
        got = [unpack(v, bits=p["out_bits"], count=p["out_count"], signed=p["out_signed"])
               for v in seen.outputs]
        for k, (have, want) in enumerate(zip(got, p["expected"], strict=True)):
            assert have == want, f"{name} vector {k}: got {have}, expected {want}"
        assert not seen.extra_outputs, f"{name}: {len(seen.extra_outputs)} extra outputs"
        if timing is None:
            ins, outs = seen.input_cycles, seen.output_cycles
            timing = {"latency": [o - i for i, o in zip(ins, outs, strict=True)],
                      "cycles_per_vector": [b - a for a, b in zip(ins, ins[1:], strict=False)]}
            assert timing["latency"] == [p["latency"]] * len(ins), timing
            assert timing["cycles_per_vector"] == [p["cycles_per_vector"]] * (len(ins) - 1), timing
    if "error" in p:
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.embedding_error.value) == p["error"], "embedding error flag"
    write_result(timing)


@cocotb.test()
async def unit(dut):
    """Checks the one unit whose name is the only key of the parameters."""
    [name] = params()
    await check_unit(dut, name)

"""cocotb bench of :class:`hardwire.hdl.attention.Attention` on its exported Verilog.

Parameters (from :func:`hardwire.sim.cocotb_stream.params`): ``widths`` (bits of the ``q``,
``k``, ``v`` and ``pos`` fields of the input payload, in layout order), ``n_out`` (output int8
elements), and ``runs``: a list of sequences, each with ``inputs`` (dicts ``q``, ``k``, ``v``,
``pos``), ``expected`` (one int8 list per input whose ``pos < context``, from
``golden_ops.attention``), ``error`` (the expected ``error`` output after the run) and
``source_pause``/``sink_pause`` (specs for :func:`hardwire.sim.cocotb_stream.pauses`). The runs
go one after another through the same cache (a new sequence restarts at ``pos = 0``). Every
output is compared bit-exactly; the result reports, per run, the cycles from each accepted input
transfer to its output transfer (``latency``; equal to ``Attention.cycles`` when the sink never
pauses).
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from hardwire.sim.cocotb_stream import exchange, params, pauses, start, write_result


def pack(item, widths):
    """The input payload as one integer: fields ``q``, ``k``, ``v`` (int8 arrays, element ``n``
    in bits ``8n..8n+7`` of its field) then ``pos``, each field after the previous one."""
    value, offset = 0, 0
    for name, width in zip(("q", "k", "v", "pos"), widths, strict=True):
        field = item[name]
        if name != "pos":
            field = sum((x & 0xFF) << (8 * n) for n, x in enumerate(field))
        value |= field << offset
        offset += width
    return value


def unpack(value, n):
    """An ``ArrayLayout(signed(8), n)`` payload (``LogicArray``) as a list of ints."""
    bits = value.to_unsigned()
    return [((bits >> (8 * k)) & 0xFF) - ((bits >> (8 * k)) & 0x80) * 2 for k in range(n)]


@cocotb.test()
async def attention_sequences(dut):
    p = params()
    widths, n_out = p["widths"], p["n_out"]
    assert len(dut.i__payload) == sum(widths), "input port width"
    assert len(dut.o__payload) == 8 * n_out, "output port width"

    await start(dut)
    latencies = []
    for number, run in enumerate(p["runs"]):
        inputs, expected = run["inputs"], run["expected"]
        seen = await exchange(dut, inputs=[pack(item, widths) for item in inputs],
                              n_outputs=len(expected),
                              source_pause=pauses(run["source_pause"]),
                              sink_pause=pauses(run["sink_pause"]))
        for k, (value, want) in enumerate(zip(seen.outputs, expected, strict=True)):
            assert unpack(value, n_out) == want, f"run {number}, output {k}"
        assert not seen.extra_outputs, f"run {number}: outputs for refused positions"
        await FallingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.error.value) == run["error"], f"run {number}: error output"
        accepted = [cycle for cycle, item in zip(seen.input_cycles, inputs, strict=True)
                    if item["pos"] < p["context"]]
        latencies.append([out - acc for acc, out in zip(accepted, seen.output_cycles, strict=True)])
    write_result({"latency": latencies})

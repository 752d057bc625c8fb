"""cocotb bench of :class:`hardwire.hdl.matvec.MatVec` on its exported Verilog.

Parameters (from :func:`hardwire.sim.cocotb_stream.params`): ``in_features``, ``acc_bits``,
``vectors`` (list of int8 lists), ``expected`` (one list of row accumulators per vector, from the
numpy reference), ``source_pause`` and ``sink_pause`` (specs for
:func:`hardwire.sim.cocotb_stream.pauses`). Every accumulator is compared bit-exactly; the result
reports the cycle of each input and output transfer, the distances between consecutive input
transfers (``cycles_per_vector``) and, per vector, the cycles from its input transfer to its last
row's transfer (``latency``).
"""

import cocotb
from hardwire.sim.cocotb_stream import exchange, params, pauses, start, write_result


def pack_int8(values):
    """Little-end-first packing of signed bytes, as ``data.ArrayLayout(signed(8), n)`` lays
    them out (element ``k`` in bits ``8k .. 8k+7``)."""
    return sum((v & 0xFF) << (8 * k) for k, v in enumerate(values))


@cocotb.test()
async def matvec_stream(dut):
    p = params()
    vectors, expected = p["vectors"], p["expected"]
    rows = len(expected[0])
    assert len(dut.i__payload) == 8 * p["in_features"], "input port width"
    assert len(dut.o__payload) == p["acc_bits"], "output port width"

    await start(dut)
    seen = await exchange(dut, inputs=[pack_int8(v) for v in vectors],
                          n_outputs=rows * len(vectors),
                          source_pause=pauses(p["source_pause"]),
                          sink_pause=pauses(p["sink_pause"]))

    got = [value.to_signed() for value in seen.outputs]
    for k, want in enumerate(expected):
        for o, value in enumerate(want):
            assert got[k * rows + o] == value, (
                f"vector {k} row {o}: got {got[k * rows + o]}, expected {value}")
    assert not seen.extra_outputs, (
        f"{len(seen.extra_outputs)} extra outputs after the last expected row")

    ins, outs = seen.input_cycles, seen.output_cycles
    write_result({
        "input_cycles": ins,
        "output_cycles": outs,
        "cycles_per_vector": [b - a for a, b in zip(ins, ins[1:], strict=False)],
        "latency": [outs[(k + 1) * rows - 1] - ins[k] for k in range(len(vectors))],
    })

"""cocotb bench of :class:`hardwire.hdl.matvec.MatVec` on its exported Verilog.

Parameters (from :func:`hardwire.sim.cocotb_stream.params`): ``in_features``, ``acc_bits``,
``vectors`` (list of int8 lists), ``expected`` (one list of row values per vector, from the
golden model), ``source_pause`` and ``sink_pause`` (specs for
:func:`hardwire.sim.cocotb_stream.pauses`), and optionally ``out_bits``: the unit requantizes, so
each vector comes out as one transfer of ``out_features`` signed ``out_bits``-bit elements (element
``o`` in bits ``out_bits*o ..``) instead of one ``acc_bits`` transfer per row. Every value is
compared bit-exactly; the result reports the cycle of each input and output transfer, the
distances between consecutive input transfers (``cycles_per_vector``) and, per vector, the cycles
from its input transfer to its last row's transfer (``latency``).
"""

import cocotb

from hardwire.sim.cocotb_stream import exchange, params, pauses, start, write_result


def pack_int8(values):
    """Little-end-first packing of signed bytes, as ``data.ArrayLayout(signed(8), n)`` lays
    them out (element ``k`` in bits ``8k .. 8k+7``)."""
    return sum((v & 0xFF) << (8 * k) for k, v in enumerate(values))


def unpack_signed(word, bits, count):
    """The ``count`` signed ``bits``-bit elements of ``word``, element 0 in the low bits."""
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    return [((word >> (bits * k)) & mask) - (((word >> (bits * k)) & half) << 1)
            for k in range(count)]


@cocotb.test()
async def matvec_stream(dut):
    p = params()
    vectors, expected = p["vectors"], p["expected"]
    rows = len(expected[0])
    out_bits = p.get("out_bits")
    assert len(dut.i__payload) == 8 * p["in_features"], "input port width"
    want_width = p["acc_bits"] if out_bits is None else out_bits * rows
    assert len(dut.o__payload) == want_width, "output port width"
    per_vector = rows if out_bits is None else 1

    await start(dut)
    seen = await exchange(dut, inputs=[pack_int8(v) for v in vectors],
                          n_outputs=per_vector * len(vectors),
                          source_pause=pauses(p["source_pause"]),
                          sink_pause=pauses(p["sink_pause"]))

    if out_bits is None:
        got = [value.to_signed() for value in seen.outputs]
    else:
        got = [unpack_signed(value.to_unsigned(), out_bits, rows) for value in seen.outputs]
        got = [v for vector in got for v in vector]
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
        "latency": [outs[(k + 1) * per_vector - 1] - ins[k] for k in range(len(vectors))],
    })

"""cocotb bench of the whole decoder (:class:`hardwire.hdl.decoder.Decoder`, top ``hardwire_top``).

Parameters (from :func:`hardwire.sim.cocotb_stream.params`): ``token_bits`` (the payload's token
field width; bit ``token_bits`` is ``last``), ``sequences`` (a list of ``{"prompt": [ids],
"max_new": n}``; each begins with ``start``), ``max_cycles`` (per sequence; the bench fails
when a sequence takes longer) and, for a design with a ``weights`` stream (the serial engine's
``weight_store="flash"``), ``weights``: the packed words, sent one a cycle after reset.

The bench exchanges tokens, not cycles: it waits on ``i__ready`` and ``o__valid`` edges instead
of polling every clock, and reads the cycle of each output transfer from the simulation time.
Result: per sequence ``tokens`` (generated ids), ``cycles`` (rising edge of each output transfer,
counted from reset release), ``prompt_cycles`` (edge of each prompt transfer) and the flags
``busy``, ``error``, ``context_full`` sampled after the sequence ended. Comparing with the golden
model is the caller's business, so a mismatch can be reported by position.
"""

import cocotb
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from hardwire.sim.cocotb_stream import params, start, write_result

PERIOD_NS = 10


def _cycle():
    return int(get_sim_time("ns")) // PERIOD_NS


async def _send(dut, token_bits, prompt, cycles):
    for k, token in enumerate(prompt):
        await FallingEdge(dut.clk)
        dut.i__payload.value = token | (int(k == len(prompt) - 1) << token_bits)
        dut.i__valid.value = 1
        await ReadOnly()
        if not dut.i__ready.value:
            await RisingEdge(dut.i__ready)
        await RisingEdge(dut.clk)       # the transfer edge
        cycles.append(_cycle())
    await FallingEdge(dut.clk)
    dut.i__valid.value = 0


async def _receive(dut, token_bits, limit_cycle):
    tokens, cycles = [], []
    timeout = Timer(max(1, limit_cycle - _cycle()) * PERIOD_NS, unit="ns")
    while True:
        fired = await First(RisingEdge(dut.o__valid), FallingEdge(dut.busy), timeout)
        if fired is timeout:
            raise AssertionError(f"no end of generation within the cycle limit: "
                                 f"{len(tokens)} tokens so far ({tokens})")
        await ReadOnly()
        if not dut.o__valid.value:
            if not dut.busy.value:
                return tokens, cycles
            continue
        word = dut.o__payload.value.to_unsigned()
        await RisingEdge(dut.clk)       # o__ready is high: the transfer edge
        tokens.append(word & ((1 << token_bits) - 1))
        cycles.append(_cycle())
        if word >> token_bits & 1:
            return tokens, cycles


async def _load_weights(dut, words):
    """One word a cycle: ``weights__ready`` is high until the last one is taken."""
    for word in words:
        await FallingEdge(dut.clk)
        assert dut.weights__ready.value, "weights__ready fell before the last word"
        assert dut.busy.value and not dut.i__ready.value, "taking tokens before the weights"
        dut.weights__payload.value = word
        dut.weights__valid.value = 1
    await FallingEdge(dut.clk)
    dut.weights__valid.value = 0
    assert not dut.weights__ready.value, "weights__ready still high after the last word"


@cocotb.test()
async def decoder_generate(dut):
    p = params()
    token_bits = p["token_bits"]
    assert len(dut.i__payload) == token_bits + 1, "input port width"
    assert len(dut.o__payload) == token_bits + 1, "output port width"
    dut.start.value = 0
    dut.i__valid.value = 0
    dut.o__ready.value = 1
    dut.max_new.value = 0
    if "weights" in p:
        dut.weights__valid.value = 0
    await start(dut, period_ns=PERIOD_NS)
    if "weights" in p:
        await _load_weights(dut, p["weights"])
    results = []
    for seq in p["sequences"]:
        await FallingEdge(dut.clk)
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        dut.max_new.value = seq["max_new"]
        began = _cycle()
        prompt_cycles = []
        await _send(dut, token_bits, seq["prompt"], prompt_cycles)
        tokens, cycles = await _receive(dut, token_bits, began + p["max_cycles"])
        await FallingEdge(dut.clk)
        results.append({"tokens": tokens, "cycles": cycles, "prompt_cycles": prompt_cycles,
                        "busy": int(dut.busy.value), "error": int(dut.error.value),
                        "context_full": int(dut.context_full.value)})
    write_result({"sequences": results, "end_cycle": _cycle()})

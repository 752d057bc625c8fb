"""cocotb bench of :class:`hardwire.hdl.serial.single_port_ram.SinglePortRAM` (top
``single_port_ram``): writes ``writes`` (``[address, word]`` pairs, one a cycle), then reads
``reads`` (addresses, one a cycle) and returns ``{"read": [word, ...]}``, each word sampled the
cycle after its address."""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hardwire.sim.cocotb_stream import params, start, write_result


@cocotb.test()
async def single_port_ram(dut):
    p = params()
    dut.we.value = 0
    await start(dut)
    for address, word in p["writes"]:
        dut.addr.value, dut.wdata.value, dut.we.value = address, word, 1
        await FallingEdge(dut.clk)
    dut.we.value = 0
    read = []
    for address in p["reads"]:
        dut.addr.value = address
        await RisingEdge(dut.clk)
        await ReadOnly()
        read.append(int(dut.rdata.value))
        await FallingEdge(dut.clk)
    write_result({"read": read})

"""One-port RAM of 16-bit words: the iCE40 UP5K's SPRAM where the design is built for it, an
Amaranth memory elsewhere (simulation, other families)."""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SPRAM_WORDS", "SPRAM_TILES", "SinglePortRAM", "is_ice40"]

SPRAM_WORDS = 1 << 14       # one SB_SPRAM256KA: 16k x 16 bits
SPRAM_TILES = 4             # on the UP5K


def is_ice40(platform):
    return str(getattr(platform, "family", "")).lower() == "ice40"


class SinglePortRAM(wiring.Component):
    """``depth`` words of 16 bits behind one port: ``addr`` and ``wdata`` with ``we`` write the
    word at the clock edge; otherwise ``rdata`` holds the word at ``addr`` from the next cycle on
    (one cycle of read latency, one access a cycle). ``rdata`` after a write cycle is undefined.

    On an iCE40 platform (``platform.family``) the words are ``ceil(depth / 16384)``
    ``SB_SPRAM256KA`` tiles side by side in the address space: yosys does not infer SPRAM from an
    Amaranth memory, which always carries an initial value, and SPRAM cannot be initialized.
    Elsewhere it is a :class:`~amaranth.lib.memory.Memory` (``memory`` after elaboration, for
    tests that look inside).
    """

    def __init__(self, depth):
        self._depth = max(1, depth)
        self.memory = None
        super().__init__({"addr": In(range(self._depth)), "wdata": In(16), "we": In(1),
                          "rdata": Out(16)})

    @property
    def depth(self):
        return self._depth

    @property
    def tiles(self):
        """SPRAM tiles on the UP5K."""
        return -(-self._depth // SPRAM_WORDS)

    def elaborate(self, platform):
        m = Module()
        if is_ice40(platform) and self.tiles <= SPRAM_TILES:
            tile = self.addr[14:] if self.tiles > 1 else 0
            tile_r = Signal(range(self.tiles))
            m.d.sync += tile_r.eq(tile)
            outs = []
            for n in range(self.tiles):
                out = Signal(16, name=f"tile{n}_data")
                here = (tile == n) if self.tiles > 1 else Const(1)
                m.submodules[f"tile{n}"] = Instance(
                    "SB_SPRAM256KA", i_ADDRESS=self.addr[:14], i_DATAIN=self.wdata,
                    i_MASKWREN=0b1111, i_WREN=self.we & here, i_CHIPSELECT=here,
                    i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=out)
                outs.append(out)
            rdata = outs[0]
            for n, out in enumerate(outs[1:], 1):
                rdata = Mux(tile_r == n, out, rdata)
            m.d.comb += self.rdata.eq(rdata)
        else:
            m.submodules.memory = self.memory = Memory(shape=16, depth=self._depth, init=[])
            rd, wr = self.memory.read_port(), self.memory.write_port()
            m.d.comb += [rd.addr.eq(self.addr), wr.addr.eq(self.addr), rd.en.eq(~self.we),
                         wr.en.eq(self.we), wr.data.eq(self.wdata), self.rdata.eq(rd.data)]
        return m

"""Matrix–vector product with int8 weights held in a ROM, ``lanes`` multiply–accumulates a cycle."""

import operator

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

__all__ = ["MatVec", "accumulator_bits"]


def accumulator_bits(in_features):
    """Signed width of a per-row int8 × int8 accumulator over ``in_features`` terms.

    ``docs/numerics.md``: ``|acc| <= n * 2^14``, so ``bit_length(n * 2^14) + 1`` bits.
    """
    return (in_features * 2 ** 14).bit_length() + 1


def _adder_tree(terms):
    # Balanced, so the depth of the adder chain grows with log2(lanes), not lanes.
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


class MatVec(wiring.Component):
    """Matrix–vector product ``acc[o] = sum_i W[o, i] * x[i]`` with constant int8 weights.

    The weights are a ROM: word ``o * chunks + c`` holds ``W[o, c*lanes : (c+1)*lanes]`` side by
    side (lane ``l`` in bits ``8l .. 8l+7``), the last chunk of a row padded with zeros. Each cycle
    one word is read and ``lanes`` products are added to the running sum of the current row;
    rows come out in order, one accumulator per row, exact (never wraps: sized from the bound in
    ``docs/numerics.md``).

    Parameters
    ----------
    weights : list of list of int
        ``out_features`` rows of ``in_features`` integers in ``-128..127`` (any shape, no
        power-of-two requirement).
    lanes : int
        Multiply–accumulates per cycle, ``1 <= lanes <= in_features``. ``lanes == in_features``
        gives one output row per cycle.

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(signed(8), in_features)))``
        One whole input vector per transfer (element ``k`` in bits ``8k .. 8k+7``). The vector
        is latched on transfer; the next one is accepted in the cycle the last ROM word of the
        current one is used, so back-to-back vectors overlap with no bubble.
    o : ``Out(stream.Signature(signed(acc_bits)))``
        ``out_features`` transfers per input vector, row 0 first. Backpressure stalls the unit
        (the output holds one finished row; the pipeline stops when the next row finishes)
        without losing or repeating a row.

    Timing (both streams always ready)
    ----------------------------------
    - ``cycles_per_vector = out_features * chunks`` with ``chunks = ceil(in_features / lanes)``:
      steady-state distance between consecutive input vectors, and between consecutive outputs
      of the same row index. Rows of one vector come out every ``chunks`` cycles.
    - ``latency = cycles_per_vector + 1``: from the cycle an input vector is accepted (its
      transfer edge) to the cycle the last row of that vector is valid on ``o``. The first row is
      valid ``chunks + 1`` cycles after acceptance.

    The ROM read address is issued in the same cycle as the input transfer (it does not depend
    on the data), so ``i.ready`` depends combinationally on ``o.ready``, and the read-port enable
    on ``i.valid``; ``o.valid`` and ``o.payload`` come straight from registers.

    Resources: the ROM (``rom_bits``), an ``8 * in_features``-bit input latch, ``lanes`` 8×8
    signed multipliers feeding a balanced adder tree, an ``acc_bits`` running sum and an
    ``acc_bits`` output register.

    Raises
    ------
    TypeError
        ``weights`` is not a list of rows, a weight is not an integer, or ``lanes`` is not an
        integer (``lanes must be an integer in 1..{in_features}, not {lanes!r}``).
    ValueError
        No rows or columns; a row of another length than row 0
        (``weights row {o} has {k} columns, expected {n} (the length of row 0)``); a weight
        outside ``-128..127`` (``weights[{o}][{i}] must be an integer in -128..127, not {w!r}``);
        ``lanes`` outside ``1..in_features`` (same message as above).
    """

    def __init__(self, *, weights, lanes):
        rows = self._check_weights(weights)
        n = len(rows[0])
        if not isinstance(lanes, int) or isinstance(lanes, bool):
            raise TypeError(f"lanes must be an integer in 1..{n}, not {lanes!r}")
        if not 1 <= lanes <= n:
            raise ValueError(f"lanes must be an integer in 1..{n}, not {lanes!r}")

        self._weights = tuple(tuple(row) for row in rows)
        self._in = n
        self._out = len(rows)
        self._lanes = lanes
        self._chunks = -(-n // lanes)
        self._acc_bits = accumulator_bits(n)

        words = []
        for row in rows:
            padded = list(row) + [0] * (self._chunks * lanes - n)
            words.extend(padded[c * lanes:(c + 1) * lanes] for c in range(self._chunks))
        self._rom = MemoryData(shape=data.ArrayLayout(signed(8), lanes), depth=len(words),
                               init=words)

        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(8), n))),
            "o": Out(stream.Signature(signed(self._acc_bits))),
        })

    @staticmethod
    def _check_weights(weights):
        try:
            rows = [list(row) for row in weights]
        except TypeError:
            raise TypeError(f"weights must be a list of rows of integers, not {weights!r}"
                            ) from None
        if not rows or not rows[0]:
            raise ValueError("weights must have at least one row and one column")
        n = len(rows[0])
        for o, row in enumerate(rows):
            if len(row) != n:
                raise ValueError(f"weights row {o} has {len(row)} columns, expected {n} "
                                 f"(the length of row 0)")
            for k, w in enumerate(row):
                try:
                    value = operator.index(w)
                except TypeError:
                    raise TypeError(f"weights[{o}][{k}] must be an integer in -128..127, not "
                                    f"{w!r}") from None
                if not -128 <= value <= 127:
                    raise ValueError(f"weights[{o}][{k}] must be an integer in -128..127, not "
                                     f"{w!r}")
                row[k] = value
        return rows

    @property
    def weights(self):
        """The weight matrix as a tuple of row tuples."""
        return self._weights

    @property
    def in_features(self):
        return self._in

    @property
    def out_features(self):
        return self._out

    @property
    def lanes(self):
        return self._lanes

    @property
    def chunks(self):
        """ROM words per output row, ``ceil(in_features / lanes)``."""
        return self._chunks

    @property
    def acc_bits(self):
        """Signed width of each output accumulator: ``bit_length(in_features * 2^14) + 1``."""
        return self._acc_bits

    @property
    def rom(self):
        """The ROM contents (:class:`amaranth.lib.memory.MemoryData`), inspectable before
        elaboration."""
        return self._rom

    @property
    def rom_bits(self):
        """ROM size in bits: ``out_features * chunks * lanes * 8`` (padding included)."""
        return self._rom.depth * self._lanes * 8

    @property
    def cycles_per_vector(self):
        """Cycles between consecutive input vectors when ``o`` is never stalled."""
        return self._out * self._chunks

    @property
    def latency(self):
        """Cycles from an input vector's transfer to its last row being valid on ``o``."""
        return self.cycles_per_vector + 1

    def elaborate(self, platform):
        m = Module()
        lanes, chunks, rows = self._lanes, self._chunks, self._out

        m.submodules.rom = rom = Memory(data=self._rom)
        rd = rom.read_port(domain="sync")

        x = Signal(data.ArrayLayout(signed(8), self._in))
        busy = Signal()                     # `x` holds a vector whose ROM words are not all used

        # Stage 0: address sequencer. `issuing` means words of the current vector remain after
        # the one addressed now; a new vector starts at word 0 in its transfer cycle.
        issuing = Signal()
        # At least one bit each: Yosys writes a zero-width wire as `[-1:0]`, which is two bits.
        next_addr = Signal(range(max(2, self._rom.depth)))
        next_chunk = Signal(range(max(2, chunks)))
        next_row = Signal(range(max(2, rows)))
        addr = Signal.like(next_addr)
        chunk = Signal.like(next_chunk)
        row = Signal.like(next_row)
        m.d.comb += [
            addr.eq(Mux(issuing, next_addr, 0)),
            chunk.eq(Mux(issuing, next_chunk, 0)),
            row.eq(Mux(issuing, next_row, 0)),
        ]

        # Stage 1: ROM word of `s1_chunk` is on `rd.data`; multiply with the matching inputs.
        s1_valid = Signal()
        s1_chunk = Signal.like(chunk)
        s1_first = Signal()                 # first chunk of a row: start a new sum
        s1_last = Signal()                  # last chunk of a row: the sum goes to `o`
        s1_final = Signal()                 # last chunk of the last row: `x` is free after this

        stall = Signal()
        m.d.comb += stall.eq(s1_valid & s1_last & self.o.valid & ~self.o.ready)
        m.d.comb += self.i.ready.eq(~busy | (s1_valid & s1_final & ~stall))
        start = self.i.valid & self.i.ready
        issue = Signal()
        m.d.comb += issue.eq(~stall & (issuing | start))

        m.d.comb += [rd.addr.eq(addr), rd.en.eq(issue)]
        with m.If(issue):
            m.d.sync += [
                next_addr.eq(addr + 1),
                next_chunk.eq(Mux(chunk == chunks - 1, 0, chunk + 1)),
                next_row.eq(Mux(chunk == chunks - 1, row + 1, row)),
                issuing.eq(addr != self._rom.depth - 1),
            ]
        with m.If(~stall):
            m.d.sync += [
                s1_valid.eq(issue),
                s1_chunk.eq(chunk),
                s1_first.eq(chunk == 0),
                s1_last.eq(chunk == chunks - 1),
                s1_final.eq((chunk == chunks - 1) & (row == rows - 1)),
            ]

        with m.If(s1_valid & s1_final & ~stall):
            m.d.sync += busy.eq(0)
        with m.If(start):
            m.d.sync += [x.eq(self.i.payload), busy.eq(1)]

        # Inputs of chunk `s1_chunk`; lanes past `in_features` multiply a zero weight anyway, and
        # a constant zero lets synthesis drop them.
        lane_x = [Signal(signed(8), name=f"lane_x{l}") for l in range(lanes)]
        with m.Switch(s1_chunk):
            for c in range(chunks):
                with m.Case(c) if c < chunks - 1 else m.Default():
                    for l in range(lanes):
                        k = c * lanes + l
                        m.d.comb += lane_x[l].eq(x[k] if k < self._in else 0)

        dot = _adder_tree([rd.data[l] * lane_x[l] for l in range(lanes)])
        acc = Signal(signed(self._acc_bits))
        total = Signal(signed(self._acc_bits))
        m.d.comb += total.eq(Mux(s1_first, 0, acc) + dot)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(s1_valid & ~stall):
            with m.If(s1_last):
                m.d.sync += [self.o.payload.eq(total), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += acc.eq(total)

        return m

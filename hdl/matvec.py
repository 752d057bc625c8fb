"""Matrix–vector product with constant weights in a ROM (int8, int5, int4 or ternary), optional
per-group scale multipliers and per-row requantization, ``lanes`` multiply–accumulates a cycle."""


from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from .vector_unit import adder_tree, check_int, rshift_round_var, saturate

__all__ = ["MatVec", "accumulator_bits", "WEIGHT_RANGES", "REQUANT_CYCLES"]

#: Weight value range per ROM width ``bits`` (2 is ternary).
WEIGHT_RANGES = {8: (-128, 127), 5: (-16, 15), 4: (-8, 7), 2: (-1, 1)}

#: Cycles the requantization and collection add to the latency when ``requant`` is given.
REQUANT_CYCLES = 2

GROUP_MULT_MAX = 1 << 14          # |g| <= 2^14 (docs/numerics.md)
M_MAX = (1 << 15) - 1             # M < 2^15
SHIFT_RANGE = (1, 62)


def accumulator_bits(in_features, *, grouped=False):
    """Signed width of a row accumulator over ``in_features`` terms (``docs/numerics.md``).

    Per row ``|acc| <= n * 2^14``; with group multipliers ``|acc| <= n * 2^28``; the width is
    ``bit_length(bound) + 1``.
    """
    return (in_features << (28 if grouped else 14)).bit_length() + 1


def _check_int_list(name, values, lo, hi, *, length):
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a list of {length} integers, not {values!r}")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a list of {length} integers, not {values!r}") from None
    if len(items) != length:
        raise ValueError(f"{name} must have {length} entries, not {len(items)}")
    return tuple(check_int(f"{name}[{k}]", v, lo, hi) for k, v in enumerate(items))


class MatVec(wiring.Component):
    """Matrix–vector product with constant weights, optionally grouped and requantized.

    Computes, as ``hardwire.sim.golden_ops.linear`` does::

        acc_j[o] = sum over i in group j of  W[o, i] * x[i]
        acc[o]   = sum_j g[o, j] * acc_j[o]      (group_mult given)  |  sum_i W[o, i] * x[i]
        y[o]     = sat_b(rshift_round(acc[o] * M[o], s[o]))            (requant given)

    The weights are a ROM of ``lanes * bits``-bit words (lane ``l`` in bits ``bits*l ..
    bits*l + bits - 1``, sign-extended on use). Each row is cut into chunks of at most ``lanes``
    weights that never cross a group boundary: group ``j`` of a row takes
    ``ceil(len_j / lanes)`` consecutive words, the last one padded with zeros (without groups,
    the row is one group of ``in_features``). Word ``o * chunks + c`` is chunk ``c`` of row
    ``o``. Group multipliers sit in a second ROM (``signed(16)``, word ``o * n_groups + j``) read
    in step with the weights; ``M`` and ``shift - 1`` in a third (one word per row), read as the
    row's sum finishes.

    With ``banks > 1`` one datapath holds ``banks`` independent sets of constants (e.g. the same
    projection of every decoder layer) and the ``bank`` port picks one per input vector. Every
    per-row parameter is given stacked, bank ``b``'s ``out_features`` rows after bank
    ``b - 1``'s, and each ROM holds bank ``b``'s words right after bank ``b - 1``'s (no
    padding): word ``b * out_features * chunks + o * chunks + c`` of the weight ROM,
    ``b * out_features * n_groups + o * n_groups + j`` of the group ROM and
    ``b * out_features + o`` of the requantization ROM. Bank ``b`` computes exactly what a
    ``MatVec`` of bank ``b``'s parameters alone computes, with the same timing.

    Parameters
    ----------
    weights : list of list of int
        ``banks * out_features`` rows of ``in_features`` integers in :data:`WEIGHT_RANGES`
        ``[bits]`` (``out_features`` is ``len(weights) // banks``).
    lanes : int
        Multiply–accumulates per cycle: ``1..in_features``, and ``1..group_size`` with groups
        (a chunk never spans two groups).
    bits : int
        ROM width of a weight: 8 (default), 5, 4, or 2 (ternary, ``{-1, 0, 1}``).
    group_size, group_mult : int, list of list of int
        Both or neither. ``group_size`` in ``1..in_features`` (the same for all banks);
        ``group_mult`` is ``banks * out_features`` rows of ``ceil(in_features / group_size)``
        integers with ``|g| <= 2^14`` (the last group may be shorter than ``group_size``).
    requant : tuple ``(M, shift, out_bits)`` or None
        Per-row ``M`` in ``0..2^15-1`` and ``shift`` in ``1..62`` (``banks * out_features``
        each, stacked like the rows), and ``out_bits`` 8 or 16 (the same for all banks).
        ``None`` (default): one raw accumulator per row.
    banks : int
        Parameter sets stacked in the ROMs, ``>= 1`` (default 1: no ``bank`` port).

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(signed(8), in_features)))``
        One whole input vector per transfer, latched; the next one is accepted in the cycle the
        last ROM word of the current one is used, so back-to-back vectors have no bubble.
    o : without ``requant``: ``Out(stream.Signature(signed(acc_bits)))``
        ``out_features`` transfers per input vector, row 0 first.
    o : with ``requant``: ``Out(stream.Signature(data.ArrayLayout(signed(out_bits),
        out_features)))``
        One transfer per input vector carrying the whole requantized vector (row ``o`` in
        element ``o``).
    bank : ``In(range(banks))``, only when ``banks > 1``
        The parameter set of the vector transferred on ``i``. It is read only in the cycle of
        that transfer (the sequencer then walks absolute ROM addresses), so it may change for the
        very next vector; holding it until the output transfer, as the decoder does, is fine.

    Backpressure on ``o`` stalls the whole pipeline (nothing lost or repeated); ``o.valid`` and
    ``o.payload`` come from registers; ``i.ready`` depends combinationally on ``o.ready``.

    Timing (both streams always ready)
    ----------------------------------
    - ``cycles_per_vector = out_features * chunks`` (``chunks`` ROM words per row, see above):
      steady-state distance between input vectors (and between output vectors).
    - ``latency = cycles_per_vector + 2`` (``+ REQUANT_CYCLES`` = ``+ 2`` with ``requant``):
      from an input vector's transfer edge to the cycle its last row (its requantized vector) is
      valid on ``o``. Without ``requant`` rows come out every ``chunks`` cycles, the first one
      ``chunks + 2`` cycles after the input transfer.
    - Pipeline: address, then ROM word × inputs through the adder tree into a register, then
      the accumulate (grouped: group sum, group multiply and row sum), so no cycle holds both
      the multipliers and the accumulator.

    Resources: the ROMs (``rom_bits``, all banks), an ``8 * in_features``-bit input latch, ``lanes``
    ``bits``×8 multipliers into a balanced adder tree and its registered sum, the ``acc_bits``
    row sum (plus, grouped, a registered group multiplier, a group sum and one 16×group-sum
    multiplier), and with ``requant`` one ``acc_bits``×15 multiplier, one barrel shifter and an
    ``out_bits * out_features``-bit collection register besides the output register. With
    banks, ``bank`` selects each ROM's first address of the bank from a constant table (no
    multiplier, no adder in front of the ROMs), and with ``requant`` an absolute row counter
    addresses the requantization ROM.

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter (and entry) and the allowed range, e.g.
        ``weights[{o}][{i}] must be an integer in -8..7, not 9``.
    """

    def __init__(self, *, weights, lanes, bits=8, group_size=None, group_mult=None,
                 requant=None, banks=1):
        banks = check_int("banks", banks, 1, None)
        if isinstance(bits, bool) or bits not in WEIGHT_RANGES:
            raise ValueError(f"bits must be 8, 5, 4 or 2, not {bits!r}")
        rows = self._check_weights(weights, *WEIGHT_RANGES[bits])
        if len(rows) % banks:
            raise ValueError(f"weights must have a multiple of banks = {banks} rows, "
                             f"not {len(rows)}")
        n, out = len(rows[0]), len(rows) // banks

        if (group_size is None) != (group_mult is None):
            raise ValueError("group_size and group_mult must be given together")
        if group_size is None:
            groups = [(0, n)]
            gmult = None
            max_lanes = n
        else:
            group_size = check_int("group_size", group_size, 1, n)
            groups = [(k, min(group_size, n - k)) for k in range(0, n, group_size)]
            gmult = self._check_group_mult(group_mult, out, banks, len(groups))
            max_lanes = group_size
        lanes = check_int("lanes", lanes, 1, max_lanes)

        if requant is not None:
            try:
                M, shift, out_bits = requant
            except (TypeError, ValueError):
                raise TypeError(f"requant must be a tuple (M, shift, out_bits), not {requant!r}"
                                ) from None
            M = _check_int_list("requant M", M, 0, M_MAX, length=banks * out)
            shift = _check_int_list("requant shift", shift, *SHIFT_RANGE, length=banks * out)
            if isinstance(out_bits, bool) or out_bits not in (8, 16):
                raise ValueError(f"requant out_bits must be 8 or 16, not {out_bits!r}")
            requant = (M, shift, out_bits)

        self._weights = tuple(tuple(row) for row in rows)
        self._in, self._out, self._lanes, self._bits = n, out, lanes, bits
        self._banks = banks
        self._group_size = group_size
        self._group_mult = gmult
        self._requant = requant
        # One entry per chunk of a row: (first input, inputs, first of its group, last of it,
        # in the row's first group).
        self._plan = []
        for start, length in groups:
            count = -(-length // lanes)
            for c in range(count):
                k = start + c * lanes
                self._plan.append((k, min(lanes, start + length - k), c == 0, c == count - 1,
                                   start == 0))
        self._chunks = len(self._plan)
        self._acc_bits = accumulator_bits(n, grouped=gmult is not None)
        self._group_acc_bits = accumulator_bits(group_size or n)

        words = []
        for row in rows:
            for k, length, *_ in self._plan:
                words.append(row[k:k + length] + [0] * (lanes - length))
        self._rom = MemoryData(shape=data.ArrayLayout(signed(bits), lanes), depth=len(words),
                               init=words)
        self._group_rom = None
        if gmult is not None:
            self._group_rom = MemoryData(shape=signed(16), depth=banks * out * len(groups),
                                         init=[g for row in gmult for g in row])
        self._requant_rom = None
        if requant is not None:
            self._requant_rom = MemoryData(
                shape=data.StructLayout({"m": unsigned(15), "shift_minus_one": unsigned(6)}),
                depth=banks * out, init=[{"m": mm, "shift_minus_one": s - 1}
                                 for mm, s in zip(M, shift, strict=True)])
            o_shape = data.ArrayLayout(signed(out_bits), out)
        else:
            o_shape = signed(self._acc_bits)

        members = {
            "i": In(stream.Signature(data.ArrayLayout(signed(8), n))),
            "o": Out(stream.Signature(o_shape)),
        }
        if banks > 1:
            members["bank"] = In(range(banks))
        super().__init__(members)

    @staticmethod
    def _check_weights(weights, lo, hi):
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
                row[k] = check_int(f"weights[{o}][{k}]", w, lo, hi)
        return rows

    @staticmethod
    def _check_group_mult(group_mult, out, banks, n_groups):
        if isinstance(group_mult, (str, bytes)):
            raise TypeError(f"group_mult must be a list of rows of integers, not {group_mult!r}")
        try:
            rows = [row for row in group_mult]
        except TypeError:
            raise TypeError(f"group_mult must be a list of rows of integers, not {group_mult!r}"
                            ) from None
        if len(rows) != banks * out:
            per = "one per output" if banks == 1 else f"one per output of each of {banks} banks"
            raise ValueError(f"group_mult must have {banks * out} rows ({per}), not {len(rows)}")
        return tuple(_check_int_list(f"group_mult[{o}]", row, -GROUP_MULT_MAX, GROUP_MULT_MAX,
                                    length=n_groups)
                     for o, row in enumerate(rows))

    @property
    def weights(self):
        """The weight matrices of all banks, stacked, as a tuple of ``banks * out_features`` row
        tuples."""
        return self._weights

    @property
    def in_features(self):
        return self._in

    @property
    def out_features(self):
        """Rows of one bank: outputs per input vector."""
        return self._out

    @property
    def banks(self):
        """Parameter sets stacked in the ROMs (1: no ``bank`` port)."""
        return self._banks

    @property
    def lanes(self):
        return self._lanes

    @property
    def bits(self):
        """ROM width of one weight (2: ternary)."""
        return self._bits

    @property
    def group_size(self):
        """Inputs per scale group, ``None`` without group multipliers."""
        return self._group_size

    @property
    def group_mult(self):
        """Group multipliers of all banks, stacked, as a tuple of row tuples, or ``None``."""
        return self._group_mult

    @property
    def n_groups(self):
        """Scale groups per row (1 without group multipliers)."""
        return 1 if self._group_mult is None else len(self._group_mult[0])

    @property
    def requant(self):
        """``(M, shift, out_bits)``, ``M`` and ``shift`` as tuples of all banks' rows, or
        ``None`` (raw accumulators)."""
        return self._requant

    @property
    def out_bits(self):
        """Width of one output element: ``requant``'s ``out_bits``, else ``acc_bits``."""
        return self._acc_bits if self._requant is None else self._requant[2]

    @property
    def chunks(self):
        """ROM words per output row: ``sum_j ceil(len_j / lanes)`` over the groups of a row
        (``ceil(in_features / lanes)`` without groups)."""
        return self._chunks

    @property
    def acc_bits(self):
        """Signed width of the row sum: ``bit_length(n * 2^14) + 1``, grouped
        ``bit_length(n * 2^28) + 1``."""
        return self._acc_bits

    @property
    def rom(self):
        """The weight ROM of all banks (:class:`amaranth.lib.memory.MemoryData`)."""
        return self._rom

    @property
    def group_rom(self):
        """The group-multiplier ROM (``signed(16)``, word ``o * n_groups + j`` of a bank), or
        ``None``."""
        return self._group_rom

    @property
    def requant_rom(self):
        """The per-row ``(m, shift_minus_one)`` ROM, or ``None``."""
        return self._requant_rom

    @property
    def rom_bits(self):
        """Total ROM size in bits: ``banks * out_features * chunks * lanes * bits`` (padding
        included), ``+ 16 * banks * out_features * n_groups`` with groups,
        ``+ 21 * banks * out_features`` with ``requant``."""
        total = self._rom.depth * self._lanes * self._bits
        if self._group_rom is not None:
            total += self._group_rom.depth * 16
        if self._requant_rom is not None:
            total += self._requant_rom.depth * 21
        return total

    @property
    def cycles_per_vector(self):
        """Cycles between consecutive input vectors when ``o`` is never stalled (any banks)."""
        return self._out * self._chunks

    @property
    def latency(self):
        """Cycles from an input vector's transfer to its last row (its requantized vector) being
        valid on ``o``: ``cycles_per_vector + 2`` (``+ REQUANT_CYCLES`` with ``requant``)."""
        return self.cycles_per_vector + 2 + (REQUANT_CYCLES if self._requant else 0)

    def elaborate(self, platform):
        m = Module()
        lanes, chunks, rows = self._lanes, self._chunks, self._out
        grouped = self._group_rom is not None
        requant = self._requant is not None

        def bank_base(name, words_per_bank):
            """First address of the selected bank in a ROM: a constant table on ``bank``, read
            only when a vector starts (later addresses come from absolute counters)."""
            if self._banks == 1:
                return 0
            base = Signal(range(self._banks * words_per_bank), name=name)
            with m.Switch(self.bank):
                for b in range(self._banks):
                    with m.Case(b) if b < self._banks - 1 else m.Default():
                        m.d.comb += base.eq(b * words_per_bank)
            return base

        m.submodules.rom = rom = Memory(data=self._rom)
        rd = rom.read_port(domain="sync")
        if grouped:
            m.submodules.group_rom = group_rom = Memory(data=self._group_rom)
            rd_g = group_rom.read_port(domain="sync")

        x = Signal(data.ArrayLayout(signed(8), self._in))
        busy = Signal()                     # `x` holds a vector whose ROM words are not all used

        # Stage 0: address sequencer. `issuing` means words of the current vector remain after
        # the one addressed now; a new vector starts at its bank's word 0 in its transfer cycle.
        issuing = Signal()
        # At least one bit each: Yosys writes a zero-width wire as `[-1:0]`, which is two bits.
        next_addr = Signal(range(max(2, self._rom.depth)))
        next_chunk = Signal(range(max(2, chunks)))
        next_row = Signal(range(max(2, rows)))
        addr = Signal.like(next_addr)
        chunk = Signal.like(next_chunk)
        row = Signal.like(next_row)
        m.d.comb += [
            addr.eq(Mux(issuing, next_addr, bank_base("rom_base", rows * chunks))),
            chunk.eq(Mux(issuing, next_chunk, 0)),
            row.eq(Mux(issuing, next_row, 0)),
        ]
        # Constant facts about chunk `chunk` of a row.
        group_first = Signal()
        group_last = Signal()
        row_first = Signal()                # in the row's first group: start a new row sum
        with m.Switch(chunk):
            for c, (_, _, first, last, in_first) in enumerate(self._plan):
                with m.Case(c) if c < chunks - 1 else m.Default():
                    m.d.comb += [group_first.eq(first), group_last.eq(last),
                                 row_first.eq(in_first)]

        # Stage 1: ROM word of `s1_chunk` is on `rd.data`; multiply with the matching inputs and
        # sum the products into `s2_dot`.
        s1_valid = Signal()
        s1_chunk = Signal.like(chunk)
        s1_row = Signal.like(row)
        s1_first = Signal()                 # start a new row sum
        s1_last = Signal()                  # last chunk of a row: the sum leaves stage 2
        s1_final = Signal()                 # last chunk of the last row: `x` is free after this
        s1_group_first = Signal()
        s1_group_last = Signal()

        # Stage 2: `s2_dot` (and, grouped, the chunk's group multiplier) go into the row sum.
        s2_valid = Signal()
        s2_first = Signal()
        s2_last = Signal()
        s2_final = Signal()
        s2_group_first = Signal()
        s2_group_last = Signal()

        # The whole pipeline stops when its last stage holds a result `o` cannot take.
        stall = Signal()
        if requant:
            s4_valid = Signal()
            s4_final = Signal()
            m.d.comb += stall.eq(s4_valid & s4_final & self.o.valid & ~self.o.ready)
        else:
            m.d.comb += stall.eq(s2_valid & s2_last & self.o.valid & ~self.o.ready)
        # `x` is last read in stage 1, so the next vector may replace it as that word moves on.
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
                # The vector's last word: chunk and row are relative to the bank, addr is not.
                issuing.eq(~((chunk == chunks - 1) & (row == rows - 1))),
            ]
        if grouped:
            next_gaddr = Signal(range(max(2, self._group_rom.depth)))
            gaddr = Signal.like(next_gaddr)
            gbase = bank_base("group_rom_base", rows * self.n_groups)
            m.d.comb += [gaddr.eq(Mux(issuing, next_gaddr, gbase)),
                         rd_g.addr.eq(gaddr), rd_g.en.eq(issue)]
            with m.If(issue):
                m.d.sync += next_gaddr.eq(gaddr + group_last)
        with m.If(~stall):
            m.d.sync += [
                s1_valid.eq(issue),
                s1_chunk.eq(chunk),
                s1_row.eq(row),
                # Grouped, the row sum is written once per group: it restarts in group 0.
                s1_first.eq(row_first if grouped else chunk == 0),
                s1_last.eq(chunk == chunks - 1),
                s1_final.eq((chunk == chunks - 1) & (row == rows - 1)),
                s1_group_first.eq(group_first),
                s1_group_last.eq(group_last),
                s2_valid.eq(s1_valid),
                s2_first.eq(s1_first),
                s2_last.eq(s1_last),
                s2_final.eq(s1_final),
                s2_group_first.eq(s1_group_first),
                s2_group_last.eq(s1_group_last),
            ]

        # The requantization ROM's row: the bank's row `row` (with banks, an absolute counter
        # beside `row`, so that `bank` is not needed after the input transfer).
        if requant:
            s1_qrow = s1_row
            if self._banks > 1:
                next_qrow = Signal(range(self._requant_rom.depth))
                qrow = Signal.like(next_qrow)
                s1_qrow = Signal.like(next_qrow)
                m.d.comb += qrow.eq(Mux(issuing, next_qrow,
                                        bank_base("requant_rom_base", rows)))
                with m.If(issue):
                    m.d.sync += next_qrow.eq(Mux(chunk == chunks - 1, qrow + 1, qrow))
                with m.If(~stall):
                    m.d.sync += s1_qrow.eq(qrow)
            s2_qrow = Signal.like(s1_qrow)
            with m.If(~stall):
                m.d.sync += s2_qrow.eq(s1_qrow)

        with m.If(s1_valid & s1_final & ~stall):
            m.d.sync += busy.eq(0)
        with m.If(start):
            m.d.sync += [x.eq(self.i.payload), busy.eq(1)]

        # Inputs of chunk `s1_chunk`; padding lanes multiply a zero weight anyway, and a constant
        # zero lets synthesis drop them.
        lane_x = [Signal(signed(8), name=f"lane_x{lane}") for lane in range(lanes)]
        with m.Switch(s1_chunk):
            for c, (k0, length, *_) in enumerate(self._plan):
                with m.Case(c) if c < chunks - 1 else m.Default():
                    for lane in range(lanes):
                        m.d.comb += lane_x[lane].eq(x[k0 + lane] if lane < length else 0)

        dot = adder_tree([rd.data[lane] * lane_x[lane] for lane in range(lanes)])
        s2_dot = Signal(dot.shape())
        with m.If(~stall):
            m.d.sync += s2_dot.eq(dot)

        acc = Signal(signed(self._acc_bits))
        total = Signal(signed(self._acc_bits))
        if grouped:
            s2_group_mult = Signal(signed(16))
            with m.If(~stall):
                m.d.sync += s2_group_mult.eq(rd_g.data)
            group_acc = Signal(signed(self._group_acc_bits))
            group_total = Signal(signed(self._group_acc_bits))
            m.d.comb += [
                group_total.eq(Mux(s2_group_first, 0, group_acc) + s2_dot),
                total.eq(Mux(s2_first, 0, acc) + s2_group_mult * group_total),
            ]
            with m.If(s2_valid & ~stall):
                m.d.sync += group_acc.eq(group_total)
                with m.If(s2_group_last):
                    m.d.sync += acc.eq(total)
        else:
            # One group: `s2_first` is chunk 0 only.
            m.d.comb += total.eq(Mux(s2_first, 0, acc) + s2_dot)
            with m.If(s2_valid & ~stall):
                m.d.sync += acc.eq(total)
        # `total` is the row's finished sum when `s2_valid & s2_last`.

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        if not requant:
            with m.If(s2_valid & s2_last & ~stall):
                m.d.sync += [self.o.payload.eq(total), self.o.valid.eq(1)]
            return m

        # Stage 3: the row's sum and its (M, shift - 1), read by row index from the third ROM.
        m.submodules.requant_rom = requant_rom = Memory(data=self._requant_rom)
        rd_q = requant_rom.read_port(domain="sync")
        m.d.comb += [rd_q.addr.eq(s2_qrow), rd_q.en.eq(~stall)]
        s3_valid, s3_final = Signal(), Signal()
        s3_acc = Signal(signed(self._acc_bits))
        # Stage 4: the product acc * M, registered so the multiplier and the barrel shifter
        # are in separate cycles.
        s4_product = Signal(signed(self._acc_bits + 16))
        s4_shift_minus_one = Signal(6)
        with m.If(~stall):
            m.d.sync += [
                s3_valid.eq(s2_valid & s2_last),
                s3_final.eq(s2_final),
                s3_acc.eq(total),
                s4_valid.eq(s3_valid),
                s4_final.eq(s3_final),
                s4_product.eq(s3_acc * rd_q.data.m),
                s4_shift_minus_one.eq(rd_q.data.shift_minus_one),
            ]

        # Rows arrive in order: shift each one in at the top, so after `out_features` of them
        # row 0 is element 0, with no row-indexed write decoder.
        out_bits = self._requant[2]
        y = Signal(signed(out_bits))
        m.d.comb += y.eq(saturate(rshift_round_var(s4_product, s4_shift_minus_one), out_bits))
        collect = Signal(data.ArrayLayout(signed(out_bits), rows))
        shifted = [collect[k + 1] for k in range(rows - 1)] + [y]
        with m.If(s4_valid & ~stall):
            m.d.sync += [collect[k].eq(v) for k, v in enumerate(shifted)]
            with m.If(s4_final):
                m.d.sync += [self.o.payload[k].eq(v) for k, v in enumerate(shifted)]
                m.d.sync += self.o.valid.eq(1)
        return m

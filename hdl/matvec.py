"""Matrix–vector product with constant weights in a ROM (int8, int5, int4 or ternary), optional
per-group scale multipliers and per-row requantization, ``lanes`` multiply–accumulates a cycle."""


from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from .vector_unit import adder_tree, check_int, rshift_round_var, saturate

__all__ = ["MatVec", "accumulator_bits", "WEIGHT_RANGES", "REQUANT_CYCLES", "PRODUCT_STAGES"]

#: Weight value range per ROM width ``bits`` (2 is ternary).
WEIGHT_RANGES = {8: (-128, 127), 5: (-16, 15), 4: (-8, 7), 2: (-1, 1)}

#: Cycles the requantization and collection add to the latency when ``requant`` is given.
REQUANT_CYCLES = 2
#: Registers between the ROM word and the adder tree (the word, the products).
PRODUCT_STAGES = 2

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

    Banks may also differ in shape (``banks`` a list of row counts): then one multiplier array
    serves matrices of different sizes one vector at a time, as the decoder's projections and
    LM head share one. Bank ``b`` has ``bank_rows[b]`` rows of ``bank_in_features[b]``
    inputs (its vector is the first ``bank_in_features[b]`` elements of ``i``), chunked as a
    ``MatVec`` of its own would chunk them, its words, group multipliers and requantization
    rows right after bank ``b - 1``'s; its requantized vector is elements ``out_features -
    bank_rows[b]`` .. ``out_features - 1`` of ``o`` (``out_features`` is the largest bank's
    rows), saturated to its own ``out_bits`` and sign-extended. With groups every bank must
    chunk its rows like the first chunks of the widest bank (a group size that divides every
    bank's inputs does). Timing is per bank (:meth:`bank_latency`).

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
        ``group_mult`` has a row per weight row, of ``ceil(inputs / group_size)`` integers
        (its bank's inputs) with ``|g| <= 2^14`` (the last group may be shorter than
        ``group_size``).
    requant : tuple ``(M, shift, out_bits)`` or None
        Per-row ``M`` in ``0..2^15-1`` and ``shift`` in ``1..62`` (one per row of every bank,
        stacked like the rows), and ``out_bits`` 8 or 16, or a tuple of them per bank.
        ``None`` (default): one raw accumulator per row.
    banks : int or list of int
        Parameter sets stacked in the ROMs, ``>= 1`` (default 1: no ``bank`` port), of
        ``len(weights) // banks`` rows each; or the rows of each bank, which may then differ
        in rows, inputs and ``out_bits``.
    rows_per_cycle : int
        Rows ``R`` worked on at once (default 1), ``R * lanes`` multipliers: a ROM word holds
        the same chunk of ``R`` consecutive rows of a bank (its rows padded with zero rows to a
        multiple of ``R``), all take the same inputs, and ``R`` accumulators and
        requantizations finish them together. Needs ``requant``.

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(signed(8), in_features)))``
        One whole input vector per transfer, latched; the next one is accepted in the cycle
        after the last ROM word of the current one is addressed, so back-to-back vectors have
        no bubble.
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
    ``o.payload`` come from registers, and so does ``i.ready`` (it never looks at ``o.ready``,
    so a client may feed ``o`` back to ``i`` through other units, as the decoder does). A
    vector taken while ``o`` stalls the pipeline starts once it moves. With ``requant`` a
    finished vector that ``o`` cannot take waits in the collection register and the pipeline
    stops at the next row, so the stall, which enables every pipeline register, comes from
    flip-flops alone (``o.ready`` reaches only the output register; and when every bank takes
    2 cycles or more a vector, only ``o.valid``: a vector finished while ``o`` is full then
    moves to ``o`` in the cycle after ``o`` empties, one cycle later than it could).

    Timing (both streams always ready)
    ----------------------------------
    - ``cycles_per_vector = out_features / rows_per_cycle * chunks`` (``chunks`` ROM words per
      row, see above):
      steady-state distance between input vectors (and between output vectors); per bank
      :meth:`bank_cycles_per_vector` when the banks differ in shape.
    - ``latency = cycles_per_vector + 4`` (``+ REQUANT_CYCLES`` = ``+ 2`` with ``requant``;
      per bank :meth:`bank_latency`):
      from an input vector's transfer edge to the cycle its last row (its requantized vector) is
      valid on ``o``. Without ``requant`` rows come out every ``chunks`` cycles, the first one
      ``chunks + 4`` cycles after the input transfer.
    - Pipeline: address and the chunk's inputs; the ROM word and the inputs into registers
      (``PRODUCT_STAGES``: the word, then the products); the adder tree into a register; then
      the accumulate (grouped: group sum, group multiply and row sum). The ROM's output mux,
      the multipliers, the adder tree and the accumulator each have a cycle of their own.

    Resources (per row of ``rows_per_cycle`` where it says "one"): the ROMs (``rom_bits``, all
    banks), an ``8 * in_features``-bit input latch, ``lanes``
    ``bits``×8 multipliers into a balanced adder tree and its registered sum, the ``acc_bits``
    row sum (plus, grouped, a registered group multiplier, a group sum and one 16×group-sum
    multiplier), and with ``requant`` one ``acc_bits``×15 multiplier, one barrel shifter and an
    ``out_bits * out_features``-bit collection register besides the output register. With
    banks, ``bank`` selects each ROM's first address of the bank (and, for banks of different
    shapes, its last chunk and row) from a constant table, held in a register after the
    transfer (no multiplier, no adder in front of the ROMs), and with ``requant`` an absolute
    row counter addresses the requantization ROM.

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter (and entry) and the allowed range, e.g.
        ``weights[{o}][{i}] must be an integer in -8..7, not 9``.
    """

    def __init__(self, *, weights, lanes, bits=8, group_size=None, group_mult=None,
                 requant=None, banks=1, rows_per_cycle=1):
        R = check_int("rows_per_cycle", rows_per_cycle, 1, None)
        if R > 1 and requant is None:
            raise ValueError("rows_per_cycle > 1 needs requant (raw accumulators leave one row "
                             "a transfer)")
        if isinstance(bits, bool) or bits not in WEIGHT_RANGES:
            raise ValueError(f"bits must be 8, 5, 4 or 2, not {bits!r}")
        rows = self._check_weights(weights, *WEIGHT_RANGES[bits])
        bank_rows = self._check_banks(banks, len(rows))
        firsts = [sum(bank_rows[:b]) for b in range(len(bank_rows))]
        bank_in = []
        for first, count in zip(firsts, bank_rows, strict=True):
            n_b = len(rows[first])
            for o in range(first, first + count):
                if len(rows[o]) != n_b:
                    raise ValueError(f"weights row {o} has {len(rows[o])} columns, expected "
                                     f"{n_b} (the length of row {first})")
            bank_in.append(n_b)
        # Each bank's rows padded with zero rows to a multiple of R: R rows share a ROM word.
        padded = tuple(-(-count // R) * R for count in bank_rows)
        n, out = max(bank_in), max(padded)

        if (group_size is None) != (group_mult is None):
            raise ValueError("group_size and group_mult must be given together")
        if group_size is None:
            bank_groups = [[(0, n_b)] for n_b in bank_in]
            gmult = None
            max_lanes = n
        else:
            group_size = check_int("group_size", group_size, 1, n)
            bank_groups = [[(k, min(group_size, n_b - k)) for k in range(0, n_b, group_size)]
                           for n_b in bank_in]
            gmult = self._check_group_mult(group_mult, bank_rows,
                                           [len(g) for g in bank_groups])
            max_lanes = group_size
        lanes = check_int("lanes", lanes, 1, max_lanes)

        if requant is not None:
            try:
                M, shift, out_bits = requant
            except (TypeError, ValueError):
                raise TypeError(f"requant must be a tuple (M, shift, out_bits), not {requant!r}"
                                ) from None
            M = _check_int_list("requant M", M, 0, M_MAX, length=len(rows))
            shift = _check_int_list("requant shift", shift, *SHIFT_RANGE, length=len(rows))
            per_bank = out_bits if isinstance(out_bits, (tuple, list)) else None
            if per_bank is not None and len(per_bank) != len(bank_rows):
                raise ValueError(f"requant out_bits must be 8, 16 or one of them per bank "
                                 f"({len(bank_rows)}), not {out_bits!r}")
            for ob in per_bank or (out_bits,):
                if isinstance(ob, bool) or ob not in (8, 16):
                    raise ValueError(f"requant out_bits must be 8 or 16, not {ob!r}")
            if per_bank is not None and len(set(per_bank)) == 1:
                out_bits = per_bank[0]
            requant = (M, shift, tuple(per_bank) if isinstance(out_bits, (tuple, list))
                       else out_bits)

        self._weights = tuple(tuple(row) for row in rows)
        self._in, self._out, self._lanes, self._bits = n, out, lanes, bits
        self._bank_rows, self._bank_in = bank_rows, tuple(bank_in)
        self._R, self._bank_padded = R, padded
        self._bank_groups = tuple(len(g) for g in bank_groups)
        self._group_size = group_size
        self._group_mult = gmult
        self._requant = requant
        # One plan per bank, an entry per chunk of a row: (first input, inputs, first of its
        # group, last of it, in the row's first group). The sequencer and the input selection
        # follow the widest bank's plan, so with groups every other plan must start like it.
        plans = [self._chunk_plan(groups, lanes) for groups in bank_groups]
        widest = bank_in.index(n)
        self._plan = plans[widest]
        for b, plan in enumerate(plans):
            if gmult is not None and [c[:1] + c[2:] for c in plan] != \
                    [c[:1] + c[2:] for c in self._plan[:len(plan)]]:
                raise ValueError(f"bank {b} ({bank_in[b]} inputs in groups of {group_size}) "
                                 f"does not chunk like bank {widest} "
                                 f"({n} inputs): use a group size that divides every bank's "
                                 f"inputs")
        self._chunks = len(self._plan)
        self._bank_chunks = tuple(len(plan) for plan in plans)
        self._acc_bits = accumulator_bits(n, grouped=gmult is not None)
        self._group_acc_bits = accumulator_bits(group_size or n)

        def row_groups(per_row, pad):
            """``per_row`` (one item per weight row) cut into each bank's groups of R rows,
            the last group of a bank filled up with ``pad``."""
            groups = []
            for first, count, size in zip(firsts, bank_rows, padded, strict=True):
                items = list(per_row[first:first + count]) + [pad] * (size - count)
                groups += [items[g:g + R] for g in range(0, size, R)]
            return groups

        words = []
        for b, group in zip((b for b, size in enumerate(padded) for _ in range(size // R)),
                            row_groups(rows, None), strict=True):
            for k, length, *_ in plans[b]:
                words.append([(row[k + lane] if row is not None and lane < length else 0)
                              for row in group for lane in range(lanes)])
        self._rom = MemoryData(shape=data.ArrayLayout(signed(bits), R * lanes),
                               depth=len(words), init=words)

        # The group and requantization ROMs keep one row a word at R = 1, else R side by side.
        def shape_of(one):
            return one if R == 1 else data.ArrayLayout(one, R)

        def word_of(items):
            return items[0] if R == 1 else items

        self._group_rom = None
        if gmult is not None:
            gwords = [word_of([0 if row is None else row[j] for row in group])
                      for group in row_groups(gmult, None) for j in range(len(group[0]))]
            self._group_rom = MemoryData(shape=shape_of(signed(16)), depth=len(gwords),
                                         init=gwords)
        self._requant_rom = None
        if requant is not None:
            fields = {"m": unsigned(15), "shift_minus_one": unsigned(6)}
            narrow = [False] * len(rows)
            if isinstance(requant[2], tuple):       # 8- and 16-bit banks: a flag per row
                fields["narrow"] = unsigned(1)
                narrow = [ob == 8 for ob, count in zip(requant[2], bank_rows, strict=True)
                          for _ in range(count)]
            params = [{"m": mm, "shift_minus_one": s - 1,
                       **({"narrow": nw} if "narrow" in fields else {})}
                      for mm, s, nw in zip(M, shift, narrow, strict=True)]
            pad = {"m": 0, "shift_minus_one": 0, **({"narrow": 0} if "narrow" in fields else {})}
            qwords = [word_of(group) for group in row_groups(params, pad)]
            self._requant_rom = MemoryData(shape=shape_of(data.StructLayout(fields)),
                                           depth=len(qwords), init=qwords)
            o_shape = data.ArrayLayout(signed(self.out_bits), out)
        else:
            o_shape = signed(self._acc_bits)

        members = {
            "i": In(stream.Signature(data.ArrayLayout(signed(8), n))),
            "o": Out(stream.Signature(o_shape)),
        }
        if len(bank_rows) > 1:
            members["bank"] = In(range(len(bank_rows)))
        super().__init__(members)

    @staticmethod
    def _chunk_plan(groups, lanes):
        plan = []
        for start, length in groups:
            count = -(-length // lanes)
            for c in range(count):
                k = start + c * lanes
                plan.append((k, min(lanes, start + length - k), c == 0, c == count - 1,
                             start == 0))
        return plan

    @staticmethod
    def _check_banks(banks, n_rows):
        """Rows per bank: ``banks`` equal parts of the ``n_rows`` rows, or the given counts."""
        if isinstance(banks, (tuple, list)):
            if not banks:
                raise ValueError("banks must be an integer >= 1 or a list of row counts, not []")
            counts = tuple(check_int(f"banks[{b}]", c, 1, None) for b, c in enumerate(banks))
            if sum(counts) != n_rows:
                raise ValueError(f"banks must add up to the {n_rows} weight rows, not "
                                 f"{sum(counts)}")
            return counts
        banks = check_int("banks", banks, 1, None)
        if n_rows % banks:
            raise ValueError(f"weights must have a multiple of banks = {banks} rows, "
                             f"not {n_rows}")
        return (n_rows // banks,) * banks

    @staticmethod
    def _check_weights(weights, lo, hi):
        try:
            rows = [list(row) for row in weights]
        except TypeError:
            raise TypeError(f"weights must be a list of rows of integers, not {weights!r}"
                            ) from None
        if not rows or not rows[0]:
            raise ValueError("weights must have at least one row and one column")
        for o, row in enumerate(rows):
            if not row:
                raise ValueError(f"weights row {o} has no columns")
            for k, w in enumerate(row):
                row[k] = check_int(f"weights[{o}][{k}]", w, lo, hi)
        return rows

    @staticmethod
    def _check_group_mult(group_mult, bank_rows, bank_groups):
        if isinstance(group_mult, (str, bytes)):
            raise TypeError(f"group_mult must be a list of rows of integers, not {group_mult!r}")
        try:
            rows = [row for row in group_mult]
        except TypeError:
            raise TypeError(f"group_mult must be a list of rows of integers, not {group_mult!r}"
                            ) from None
        total = sum(bank_rows)
        if len(rows) != total:
            per = ("one per output" if len(bank_rows) == 1 else
                   f"one per output of each of {len(bank_rows)} banks")
            raise ValueError(f"group_mult must have {total} rows ({per}), not {len(rows)}")
        lengths = [g for g, count in zip(bank_groups, bank_rows, strict=True)
                   for _ in range(count)]
        return tuple(_check_int_list(f"group_mult[{o}]", row, -GROUP_MULT_MAX, GROUP_MULT_MAX,
                                    length=length)
                     for o, (row, length) in enumerate(zip(rows, lengths, strict=True)))

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
        """Rows of the largest bank (padded to a multiple of ``rows_per_cycle``): the elements
        of a requantized output vector."""
        return self._out

    @property
    def rows_per_cycle(self):
        """Rows the multiplier array works on at once (``lanes`` multipliers each)."""
        return self._R

    def bank_first(self, bank):
        """Element of ``o`` holding row 0 of ``bank``'s requantized vector: ``out_features``
        less its rows padded to a multiple of ``rows_per_cycle``."""
        return self._out - self._bank_padded[bank]

    @property
    def banks(self):
        """Parameter sets stacked in the ROMs (1: no ``bank`` port)."""
        return len(self._bank_rows)

    @property
    def bank_rows(self):
        """Rows (outputs per input vector) of each bank."""
        return self._bank_rows

    @property
    def bank_in_features(self):
        """Inputs of each bank (``in_features`` is the largest)."""
        return self._bank_in

    @property
    def bank_chunks(self):
        """ROM words per row of each bank (``chunks`` is the largest)."""
        return self._bank_chunks

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
        """Scale groups per row of the widest bank (1 without group multipliers)."""
        return 1 if self._group_mult is None else max(len(row) for row in self._group_mult)

    @property
    def requant(self):
        """``(M, shift, out_bits)``, ``M`` and ``shift`` as tuples of all banks' rows and
        ``out_bits`` an int (a tuple per bank when the banks differ), or ``None`` (raw
        accumulators)."""
        return self._requant

    @property
    def out_bits(self):
        """Width of one output element: ``requant``'s (largest) ``out_bits``, else
        ``acc_bits``."""
        if self._requant is None:
            return self._acc_bits
        return max(self._requant[2]) if isinstance(self._requant[2], tuple) else self._requant[2]

    def bank_out_bits(self, bank):
        """``out_bits`` of ``bank``'s requantized elements (sign-extended to ``out_bits``)."""
        ob = self._requant[2] if self._requant is not None else self._acc_bits
        return ob[bank] if isinstance(ob, tuple) else ob

    @property
    def chunks(self):
        """ROM words per output row of the widest bank: ``sum_j ceil(len_j / lanes)`` over the
        groups of a row (``ceil(in_features / lanes)`` without groups)."""
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
        """The per-row ``(m, shift_minus_one)`` ROM (with banks of both output widths also
        ``narrow``: the row saturates to 8 bits), or ``None``."""
        return self._requant_rom

    @property
    def rom_bits(self):
        """Total ROM size in bits: every bank's ``rows * chunks * lanes * bits`` (padding
        included), ``+ 16`` per group multiplier with groups, ``+ 21`` per row with ``requant``
        (22 with banks of both output widths)."""
        total = self._rom.depth * self._R * self._lanes * self._bits
        if self._group_rom is not None:
            total += self._group_rom.depth * 16 * self._R
        if self._requant_rom is not None:
            total += self._requant_rom.depth * self._requant_rom.shape.size
        return total

    def bank_cycles_per_vector(self, bank):
        """Cycles ``bank``'s vector holds the multipliers: ``ceil(bank_rows / rows_per_cycle)
        * bank_chunks``; the next vector, of any bank, may start right after them."""
        return self._bank_padded[bank] // self._R * self._bank_chunks[bank]

    def bank_latency(self, bank):
        """Cycles from the transfer of a ``bank`` vector to its last row (its requantized
        vector) being valid on ``o``: ``bank_cycles_per_vector + 4`` (``+ REQUANT_CYCLES``
        with ``requant``)."""
        return (self.bank_cycles_per_vector(bank) + 2 + PRODUCT_STAGES
                + (REQUANT_CYCLES if self._requant else 0))

    @property
    def cycles_per_vector(self):
        """Cycles between consecutive input vectors when ``o`` is never stalled: the slowest
        bank's :meth:`bank_cycles_per_vector` (all banks', when they have one shape)."""
        return max(self.bank_cycles_per_vector(b) for b in range(self.banks))

    @property
    def latency(self):
        """The slowest bank's :meth:`bank_latency`: ``cycles_per_vector + 4`` (``+
        REQUANT_CYCLES`` with ``requant``)."""
        return max(self.bank_latency(b) for b in range(self.banks))

    def elaborate(self, platform):
        m = Module()
        R = self._R
        lanes, chunks, rows = self._lanes, self._chunks, self._out // R   # rows: of R each
        grouped = self._group_rom is not None
        requant = self._requant is not None
        n_banks = self.banks

        start = self.i.valid & self.i.ready

        def bank_table(name, values):
            """``values`` of the vector's bank: a constant table on ``bank`` in its transfer
            cycle, then a register that kept it (``bank`` is read only in that cycle)."""
            if len(set(values)) == 1:
                return values[0]
            table, held = Signal(range(max(values) + 1)), Signal(range(max(values) + 1),
                                                                 name=f"{name}_held")
            with m.Switch(self.bank):
                for b in range(n_banks):
                    with m.Case(b) if b < n_banks - 1 else m.Default():
                        m.d.comb += table.eq(values[b])
            with m.If(start):
                m.d.sync += held.eq(table)
            value = Signal.like(table, name=name)
            m.d.comb += value.eq(Mux(start, table, held))
            return value

        def bank_firsts(per_bank):
            return [sum(per_bank[:b]) for b in range(n_banks)]

        bank_row_groups = [p // R for p in self._bank_padded]          # R-row groups per bank
        bank_words = [g * c for g, c in zip(bank_row_groups, self._bank_chunks, strict=True)]

        m.submodules.rom = rom = Memory(data=self._rom)
        rd = rom.read_port(domain="sync")
        if grouped:
            m.submodules.group_rom = group_rom = Memory(data=self._group_rom)
            rd_g = group_rom.read_port(domain="sync")

        x = Signal(data.ArrayLayout(signed(8), self._in))
        busy = Signal()                 # `x` holds a vector whose ROM words are not all addressed

        # Stage 0: address sequencer. `issuing` means the current vector's first word has been
        # addressed; a new vector starts at its bank's word 0, in its transfer cycle unless the
        # pipeline is stalled then.
        issuing = Signal()
        # At least one bit each: Yosys writes a zero-width wire as `[-1:0]`, which is two bits.
        next_addr = Signal(range(max(2, self._rom.depth)))
        next_chunk = Signal(range(max(2, chunks)))
        next_row = Signal(range(max(2, rows)))
        addr = Signal.like(next_addr)
        chunk = Signal.like(next_chunk)
        row = Signal.like(next_row)
        # The vector's last chunk of a row and last row: its bank's.
        last_chunk = bank_table("bank_last_chunk", [c - 1 for c in self._bank_chunks])
        last_row = bank_table("bank_last_row", [g - 1 for g in bank_row_groups])
        m.d.comb += [
            addr.eq(Mux(issuing, next_addr, bank_table("rom_base", bank_firsts(bank_words)))),
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

        # Stage 1: the ROM word is on `rd.data`, the matching inputs in `s1_lane_x`; multiply
        # and sum the products into `s2_dot`.
        s1_valid = Signal()
        s1_row = Signal.like(row)
        s1_first = Signal()                 # start a new row sum
        s1_last = Signal()                  # last chunk of a row: the sum leaves stage 2
        s1_final = Signal()                 # last chunk of the last row
        s1_group_first = Signal()
        s1_group_last = Signal()

        # Stage 2: `s2_dot` (and, grouped, the chunk's group multiplier) go into the row sum.
        s2_valid = Signal()
        s2_first = Signal()
        s2_last = Signal()
        s2_final = Signal()
        s2_group_first = Signal()
        s2_group_last = Signal()

        # The whole pipeline stops when its last stage holds a result that cannot move on.
        stall = Signal()
        if requant:
            # From registers only: `held` (below) is a finished vector `o` has not taken, in the
            # collection register, which the next row would overwrite. `o.ready` stays out of
            # this net, which enables every register of the pipeline.
            s4_valid = Signal()
            s4_final = Signal()
            held = Signal()
            m.d.comb += stall.eq(s4_valid & held)
        else:
            m.d.comb += stall.eq(s2_valid & s2_last & self.o.valid & ~self.o.ready)
        # `x` is last read as its final word is addressed (stage 1 gets the inputs in a
        # register), so the next vector may replace it in the following cycle; `i.ready` is a
        # register, and a vector taken during a stall waits in `x` with its bank's tables held.
        m.d.comb += self.i.ready.eq(~busy)
        issue = Signal()
        final_word = Signal()
        m.d.comb += [issue.eq(~stall & (busy | start)),
                     final_word.eq((chunk == last_chunk) & (row == last_row))]

        m.d.comb += [rd.addr.eq(addr), rd.en.eq(issue)]
        with m.If(issue):
            m.d.sync += [
                next_addr.eq(addr + 1),
                next_chunk.eq(Mux(chunk == last_chunk, 0, chunk + 1)),
                next_row.eq(Mux(chunk == last_chunk, row + 1, row)),
                # The vector's last word: chunk and row are relative to the bank, addr is not.
                issuing.eq(~final_word),
            ]
        if grouped:
            next_gaddr = Signal(range(max(2, self._group_rom.depth)))
            gaddr = Signal.like(next_gaddr)
            gbase = bank_table("group_rom_base", bank_firsts(
                [r * g for r, g in zip(bank_row_groups, self._bank_groups, strict=True)]))
            m.d.comb += [gaddr.eq(Mux(issuing, next_gaddr, gbase)),
                         rd_g.addr.eq(gaddr), rd_g.en.eq(issue)]
            with m.If(issue):
                m.d.sync += next_gaddr.eq(gaddr + group_last)
        def delayed(value, cycles, name):
            """``value`` ``cycles`` pipeline steps later (each held while the pipeline stalls)."""
            for k in range(cycles):
                reg = Signal(value.shape(), name=f"{name}_p{k}")
                with m.If(~stall):
                    m.d.sync += reg.eq(value)
                value = reg
            return value

        with m.If(~stall):
            m.d.sync += [
                s1_valid.eq(issue),
                s1_row.eq(row),
                # Grouped, the row sum is written once per group: it restarts in group 0.
                s1_first.eq(row_first if grouped else chunk == 0),
                s1_last.eq(chunk == last_chunk),
                s1_final.eq(final_word),
                s1_group_first.eq(group_first),
                s1_group_last.eq(group_last),
            ]
        # Stage 1 is PRODUCT_STAGES + 1 steps: word, products, their sum.
        for name, s1, s2 in (("valid", s1_valid, s2_valid), ("first", s1_first, s2_first),
                             ("last", s1_last, s2_last), ("final", s1_final, s2_final),
                             ("group_first", s1_group_first, s2_group_first),
                             ("group_last", s1_group_last, s2_group_last)):
            m.d.comb += s2.eq(delayed(s1, PRODUCT_STAGES + 1, f"s1_{name}"))

        # The requantization ROM's row: the bank's row `row` (with banks, an absolute counter
        # beside `row`, so that `bank` is not needed after the input transfer).
        if requant:
            s1_qrow = s1_row
            if n_banks > 1:
                next_qrow = Signal(range(self._requant_rom.depth))
                qrow = Signal.like(next_qrow)
                s1_qrow = Signal.like(next_qrow)
                m.d.comb += qrow.eq(Mux(issuing, next_qrow,
                                        bank_table("requant_rom_base",
                                                   bank_firsts(bank_row_groups))))
                with m.If(issue):
                    m.d.sync += next_qrow.eq(Mux(chunk == last_chunk, qrow + 1, qrow))
                with m.If(~stall):
                    m.d.sync += s1_qrow.eq(qrow)
            s2_qrow = delayed(s1_qrow, PRODUCT_STAGES + 1, "s1_qrow")

        with m.If(start):
            m.d.sync += [x.eq(self.i.payload), busy.eq(1)]
        with m.If(issue & final_word):
            m.d.sync += busy.eq(0)

        # Inputs of chunk `chunk` (chunk 0 straight from the input in its transfer cycle),
        # registered for stage 1; padding lanes multiply a zero weight anyway, and a constant
        # zero lets synthesis drop them.
        lane_x = [Signal(signed(8), name=f"lane_x{lane}") for lane in range(lanes)]
        s1_lane_x = [Signal(signed(8), name=f"s1_lane_x{lane}") for lane in range(lanes)]
        with m.Switch(chunk):
            for c, (k0, length, *_) in enumerate(self._plan):
                with m.Case(c) if c < chunks - 1 else m.Default():
                    for lane in range(lanes):
                        m.d.comb += lane_x[lane].eq(x[k0 + lane] if lane < length else 0)
        length0 = self._plan[0][1]
        with m.If(start):
            m.d.comb += [lane_x[lane].eq(self.i.payload[lane] if lane < length0 else 0)
                         for lane in range(lanes)]
        with m.If(~stall):
            m.d.sync += [s1_lane_x[lane].eq(lane_x[lane]) for lane in range(lanes)]

        # One dot product per row of the R the word holds: ROM lanes r*lanes .. of row r.
        def word(rd_data, r):
            return rd_data if R == 1 else rd_data[r]

        # The word and the inputs are registered, then the products, then their sum: the ROM
        # output (a mux over block RAMs spread over the device), the multipliers and the adder
        # tree take a cycle each.
        weights = delayed(rd.data, 1, "weights")
        xs = [delayed(s1_lane_x[lane], 1, f"x{lane}") for lane in range(lanes)]
        s2_dot = []
        for r in range(R):
            products = []
            for lane in range(lanes):
                # Named so that the FPGA build can put one row's multipliers into DSP blocks
                # (gen/dsp_allocation.py selects the cells driving `mac_row{r}_lane*`).
                mac = Signal(signed(self._bits + 8), name=f"mac_row{r}_lane{lane}")
                m.d.comb += mac.eq(weights[r * lanes + lane] * xs[lane])
                products.append(delayed(mac, 1, f"product{r}_{lane}"))
            s2_dot.append(delayed(adder_tree(products), 1, f"s2_dot{r}"))

        totals = []
        for r in range(R):
            acc = Signal(signed(self._acc_bits), name=f"acc{r}")
            total = Signal(signed(self._acc_bits), name=f"total{r}")
            totals.append(total)
            if grouped:
                s2_group_mult = Signal(signed(16), name=f"s2_group_mult{r}")
                m.d.comb += s2_group_mult.eq(
                    delayed(word(rd_g.data, r), PRODUCT_STAGES + 1, f"group_mult{r}"))
                group_acc = Signal(signed(self._group_acc_bits), name=f"group_acc{r}")
                group_total = Signal(signed(self._group_acc_bits), name=f"group_total{r}")
                m.d.comb += [
                    group_total.eq(Mux(s2_group_first, 0, group_acc) + s2_dot[r]),
                    total.eq(Mux(s2_first, 0, acc) + s2_group_mult * group_total),
                ]
                with m.If(s2_valid & ~stall):
                    m.d.sync += group_acc.eq(group_total)
                    with m.If(s2_group_last):
                        m.d.sync += acc.eq(total)
            else:
                # One group: `s2_first` is chunk 0 only.
                m.d.comb += total.eq(Mux(s2_first, 0, acc) + s2_dot[r])
                with m.If(s2_valid & ~stall):
                    m.d.sync += acc.eq(total)
        # `totals` are the R rows' finished sums when `s2_valid & s2_last`.

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        if not requant:
            with m.If(s2_valid & s2_last & ~stall):
                m.d.sync += [self.o.payload.eq(totals[0]), self.o.valid.eq(1)]
            return m

        # Stage 3: the rows' sums and their (M, shift - 1), read by row group from the third
        # ROM. Stage 4: the products acc * M, registered so the multipliers and the barrel
        # shifters are in separate cycles.
        m.submodules.requant_rom = requant_rom = Memory(data=self._requant_rom)
        rd_q = requant_rom.read_port(domain="sync")
        m.d.comb += [rd_q.addr.eq(s2_qrow), rd_q.en.eq(~stall)]
        s3_valid, s3_final = Signal(), Signal()
        with m.If(~stall):
            m.d.sync += [s3_valid.eq(s2_valid & s2_last), s3_final.eq(s2_final),
                         s4_valid.eq(s3_valid), s4_final.eq(s3_final)]
        # Rows arrive in order, R at a time: shift them in at the top, so after a bank's rows
        # its row 0 is element `bank_first`, with no row-indexed write decoder.
        out_bits = self.out_bits
        ys = []
        for r in range(R):
            q = word(rd_q.data, r)
            s3_acc = Signal(signed(self._acc_bits), name=f"s3_acc{r}")
            s4_product = Signal(signed(self._acc_bits + 16), name=f"s4_product{r}")
            s4_shift_minus_one = Signal(6, name=f"s4_shift_minus_one{r}")
            s4_narrow = Signal(name=f"s4_narrow{r}")
            with m.If(~stall):
                m.d.sync += [s3_acc.eq(totals[r]), s4_product.eq(s3_acc * q.m),
                             s4_shift_minus_one.eq(q.shift_minus_one)]
                if "narrow" in data.Layout.cast(q.shape()).members:
                    m.d.sync += s4_narrow.eq(q.narrow)
            y = Signal(signed(out_bits), name=f"y{r}")
            scaled = rshift_round_var(s4_product, s4_shift_minus_one)
            m.d.comb += y.eq(Mux(s4_narrow, saturate(scaled, 8), saturate(scaled, out_bits)))
            ys.append(y)
        collect = Signal(data.ArrayLayout(signed(out_bits), self._out))
        shifted = [collect[k + R] for k in range(self._out - R)] + ys
        # A finished vector goes to `o` if it is free; otherwise it stays `held` in `collect`
        # and moves to `o` once `o` is free. When every bank takes 2 cycles or more a vector,
        # vectors finish 2 cycles apart or more, so with `o` always ready `o` is always empty
        # by then: "free" is then `~o.valid` alone, and `o.ready`, a handshake from other
        # units, stays off the enable of the output register (thousands of flip-flops, the
        # design's critical path when it was there).
        o_free = ~self.o.valid
        if min(self.bank_cycles_per_vector(b) for b in range(self.banks)) < 2:
            o_free = o_free | self.o.ready
        with m.If(s4_valid & ~stall):
            m.d.sync += [collect[k].eq(v) for k, v in enumerate(shifted)]
            with m.If(s4_final):
                with m.If(o_free):
                    m.d.sync += [self.o.payload[k].eq(v) for k, v in enumerate(shifted)]
                    m.d.sync += self.o.valid.eq(1)
                with m.Else():
                    m.d.sync += held.eq(1)
        with m.If(held & o_free):
            m.d.sync += [self.o.payload.eq(collect), self.o.valid.eq(1), held.eq(0)]
        return m

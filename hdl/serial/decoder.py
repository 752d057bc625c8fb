"""The serial decoder: the whole model on one multiplier, for parts too small for the lane
datapath (the iCE40 UP5K)."""

from amaranth.hdl import (
    Cat,
    Const,
    Module,
    Mux,
    ResetInserter,
    Signal,
    signed,
    unsigned,
)
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from ..generation import GenerationLoop, decoder_signature, token_bits
from .arith import Reciprocal, SeqMul
from .program import (
    ATTN,
    EMB,
    HEAD,
    KVST,
    MV,
    NORM,
    RESID,
    ROPE,
    SWIGLU,
    bit_width,
    program,
    ram_map,
)
from .single_port_ram import SinglePortRAM

__all__ = ["SerialDecoder"]

ACC_BITS = 48           # every accumulator and multiplicand of docs/numerics.md fits
NORM_STEPS = 24         # fixed normalisation steps of RMSNorm's u (< 2^48): shrink 19, grow 4
RECIP_SHIFT = 40
EXP_FRAC_BITS = 8
ROPE_FRAC_BITS = 14
RSQRT_BITS, RSQRT_BASE = 20, 256
WEIGHT_STORES = ("rom", "flash")


class SerialDecoder(wiring.Component):
    """The decoder of :class:`hardwire.hdl.decoder.Decoder` — the same ports, protocol and
    integer results (``docs/numerics.md``) — on one shared datapath: a 17 × 17 multiplier for
    the multiply–accumulates, a shift-add :class:`SeqMul` for the wide products
    (requantization, group multipliers, RMSNorm gains, softmax, attention output), a
    :class:`Reciprocal` for ``2^40 / P``, one rounding shifter and four memories (weights,
    16-bit constants, activations, the KV cache with ``k`` and ``v`` in one 16-bit word).

    A per-token program of ops (:data:`EMB` … :data:`HEAD`, one list entry per op and layer)
    steps through those units; each multiply–accumulate takes two cycles (address, then data).

    Parameters
    ----------
    image : :class:`hardwire.gen.serial_image.SerialImage`
    weight_store : ``"rom"`` or ``"flash"``
        ``"rom"``: the weights are ROM constants of the design. ``"flash"``: they are not in the
        design at all; a RAM of :attr:`weight_words` 16-bit words (SPRAM on the UP5K) takes
        them, packed as :meth:`~hardwire.gen.serial_image.SerialImage.packed_weights` lays them
        out, from the ``weights`` stream after reset (the board top reads them from SPI flash).

    Members and protocol are those of :class:`~hardwire.hdl.decoder.Decoder`; with
    ``weight_store="flash"`` also

    weights : ``In(stream.Signature(16))``
        The packed weight words, in address order, once after reset: ``ready`` is high until
        the last one is taken. Until then ``busy`` is high and ``i.ready`` low; ``start`` does
        not clear the loaded weights (``rst`` does).

    Timing
    ------
    :meth:`cycles_per_token` and :meth:`cycles_per_prompt_token` (``pos``) give the exact edges
    between output transfers and between prompt-token transfers, as for ``Decoder``; no cycle
    depends on the data.
    """

    def __init__(self, *, image, weight_store="rom"):
        if weight_store not in WEIGHT_STORES:
            raise ValueError(f"weight_store must be one of {', '.join(WEIGHT_STORES)}, not "
                             f"{weight_store!r}")
        self._image = image
        self._weight_store = weight_store
        self._weight_words = image.packed_weights() if weight_store == "flash" else None
        self._vocab, self._dim, self._context = image.vocab, image.dim, image.context
        self._eos = image.eos_id
        self._ram, self._ram_depth = ram_map(image)
        self._ops = program(image, self._ram)
        self._token_bits = token_bits(self._vocab)
        signature = decoder_signature(self._vocab)
        if weight_store == "flash":
            signature = wiring.Signature({**signature.members,
                                          "weights": In(stream.Signature(16))})
        super().__init__(signature)

    vocab = property(lambda self: self._vocab)
    context = property(lambda self: self._context)
    eos_id = property(lambda self: self._eos)
    n_layers = property(lambda self: len(self._image.layers))
    weight_store = property(lambda self: self._weight_store)

    @property
    def weight_words(self):
        """The packed weight words the ``weights`` stream takes (``None`` for ``"rom"``)."""
        return self._weight_words

    @property
    def weight_image(self):
        """``(bytes, crc32)`` of :attr:`weight_words` as the flash holds them
        (:meth:`~hardwire.gen.serial_image.SerialImage.weight_flash_image`); ``None`` for
        ``"rom"``."""
        return self._image.weight_flash_image() if self._weight_store == "flash" else None

    # -- timing ------------------------------------------------------------------------------

    def _op_cycles(self, op, pos):
        """Cycles of the op's states, from its first state after ``DISPATCH`` to its last."""
        im, kind, n = self._image, op["kind"], op["n"]
        req = 1 + 17 + 1 + 1                    # REQ (SeqMul start), 17 busy, result, write
        if kind in (MV, HEAD):
            groups = -(-op["n_in"] // op["gsize"])
            per_group = 3 + 16 if op["grouped"] else 1
            return n * (3 + 2 * op["n_in"] + groups * per_group + req)
        if kind == EMB:
            lookup = 2 + bit_width(im.vocab) + 1
            if op["grouped"]:
                return 2 * lookup + 3 + n * (2 + 17 + req)
            return lookup + 3 + n * (2 + req)
        if kind == NORM:
            return 2 * n + 1 + NORM_STEPS + 2 + n * (2 + 16 + 1 + 1)
        if kind == ROPE:
            return n * (im.head_dim // 2) * 8
        if kind in (KVST, RESID):
            return 3 * n
        if kind == ATTN:
            hd, positions = im.head_dim, pos + 1
            pass1 = positions * (2 * hd + 2)
            pass2 = positions * (2 * hd + 2 + 17 + 1 + 1 + 1)
            recip = 1 + RECIP_SHIFT + 1 + 1
            out = hd * (1 + 2 * positions + 1 + 27 + 1 + 1)
            return n * (1 + pass1 + pass2 + recip + out)
        if kind == SWIGLU:
            return n * (3 + req)
        raise AssertionError(kind)

    def _step_cycles(self, pos, want):
        ops = self._ops if want else self._ops[:-2]
        return 1 + sum(self._op_cycles(op, pos) + 2 for op in ops)     # + FETCH, DISPATCH

    def cycles_per_token(self, pos):
        """Clock edges per generated token fed back at position ``pos``."""
        return 1 + self._step_cycles(pos, True) + 1

    def cycles_per_prompt_token(self, pos):
        """Clock edges per non-final prompt token at position ``pos``."""
        return 2 + self._step_cycles(pos, False)

    # -- hardware ----------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        im = self._image
        ctx, hd = self._context, im.head_dim
        half = hd // 2
        kvd = im.n_kv_heads * hd
        group = im.n_heads // im.n_kv_heads

        top = Module()              # what start does not reset: the weight loading
        crom = Memory(shape=unsigned(16), depth=len(im.consts), init=im.consts)
        ram = Memory(shape=unsigned(16), depth=self._ram_depth, init=[])
        m.submodules.crom, m.submodules.ram = crom, ram
        self._probe = {"ram": ram}              # for tests that compare intermediates
        c_rd, r_rd, r_wr = crom.read_port(), ram.read_port(), ram.write_port()

        # Weight reads: the address in one cycle, the weight the next.
        w_addr = Signal(range(len(im.weights) + 1))
        loaded = Signal(init=self._weight_store == "rom")
        if self._weight_store == "rom":
            wrom = Memory(shape=signed(im.weight_bits), depth=len(im.weights), init=im.weights)
            m.submodules.wrom = wrom
            w_rd = wrom.read_port()
            m.d.comb += w_rd.addr.eq(w_addr)
            w_val = w_rd.data
        else:
            w_val = self._weight_ram(m, top, w_addr, loaded)

        # The KV cache has one port, so that on the UP5K it is an SPRAM.
        m.submodules.kv = kv = SinglePortRAM(self.n_layers * ctx * kvd)
        kv_addr, kv_wdata, kv_we, kv_rdata = kv.addr, kv.wdata, kv.we, kv.rdata
        c_val, c_sval = c_rd.data, c_rd.data.as_signed()
        r_sval = r_rd.data.as_signed()
        k_val, v_val = kv_rdata[:8].as_signed(), kv_rdata[8:].as_signed()

        m.submodules.mul = mul = SeqMul(a_bits=ACC_BITS, b_bits=28)
        m.submodules.recip = recip = Reciprocal(k=RECIP_SHIFT,
                                                d_bits=bit_width(ctx << 15))

        # The one fast multiplier.
        fa, fb = Signal(signed(17)), Signal(signed(17))
        fp = Signal(signed(34))
        m.d.comb += fp.eq(fa * fb)

        # The one rounding shifter, sat_b(rshift_round(value, shift)), in two stages: a state
        # loads value + 2^(shift-1) and shift into registers, the next one uses the result.
        rs_in, rs_s = Signal(signed(64)), Signal(6)
        rs_out = Signal(signed(64))
        m.d.comb += rs_out.eq(rs_in >> rs_s)
        sat8, sat16 = Signal(signed(8)), Signal(signed(16))

        def saturate(sat, value):
            # In range iff the bits from the sign of sat up are all equal: a reduction, shorter
            # than two carry-chain comparisons on the UP5K.
            bits = len(sat)
            top = Signal(len(value) - bits + 1)
            m.d.comb += top.eq(value[bits - 1:])
            hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
            fits = top.all() | ~top.any()
            m.d.comb += sat.eq(Mux(fits, value[:bits], Mux(value[-1], lo, hi)))
        saturate(sat8, rs_out)
        saturate(sat16, rs_out)

        def round_shift(value, shift):
            amount = Signal(6)
            m.d.comb += amount.eq(shift)
            m.d.sync += [rs_in.eq(value + ((Const(1, 64) << amount) >> 1)), rs_s.eq(amount)]

        # The current op's constants.
        ops = self._ops
        pc = Signal(range(len(ops)))
        self._probe["pc"] = pc
        widths = {}
        for op in ops:
            for key, value in op.items():
                widths[key] = max(widths.get(key, 1), bit_width(abs(int(value))))
        # Decoded from pc in FETCH and registered: the decode stays off the datapath's paths.
        f = {key: Signal(signed(bits + 1), name=f"op_{key}") for key, bits in widths.items()}
        fetch = Signal()
        with m.If(fetch):
            m.d.sync += [v.eq(0) for v in f.values()]
            with m.Switch(pc):
                for index, op in enumerate(ops):
                    with m.Case(index):
                        m.d.sync += [f[key].eq(int(value)) for key, value in op.items()]

        # Sequencing state (shared by the ops).
        ram_map = self._ram
        loop = GenerationLoop(self, vocab=self._vocab, context=ctx, eos_id=self._eos,
                              token_bits=self._token_bits, hold=~loaded)
        pos, token, want = loop.pos, loop.token, loop.want
        pos_rope = Signal(range(ctx * half + 1))    # pos * head_dim/2
        pos_kv = Signal(range(ctx * kvd + 1))       # pos * kv_dim
        best, best_idx = Signal(signed(16)), Signal(unsigned(self._token_bits))

        o = Signal(range(max(op["n"] for op in ops) + 1))       # output / element index
        i = Signal(range(max(max(op.get("n_in", 1) for op in ops), ctx, hd, kvd, im.dim) + 1))
        ig = Signal.like(i)
        t = Signal(range(ctx + 1))
        wp = Signal(range(len(im.weights) + 1))
        gp = Signal(range(len(im.consts) + 1))
        kvp = Signal(range(self.n_layers * ctx * kvd + 1))
        gb = Signal(range(kvd + 1))                 # this head's KV group * head_dim
        hg = Signal(range(group + 1))
        qb = Signal(range(self._ram_depth + 1))
        acc, accj, mx = Signal(signed(ACC_BITS)), Signal(signed(ACC_BITS)), Signal(signed(ACC_BITS))
        psum = Signal(unsigned(bit_width(ctx << 15) + 1))
        M_r, s_r = Signal(unsigned(16)), Signal(6)
        av, bv, cv, sv = (Signal(signed(17), name=n) for n in ("av", "bv", "cv", "sv"))
        nm = Signal(ACC_BITS + 2)                   # RMSNorm's m, then R
        ne = Signal(signed(8))                      # RMSNorm's e
        steps = Signal(range(NORM_STEPS + 1))
        dexp = Signal(unsigned(ACC_BITS))           # softmax D
        recip_r = Signal(unsigned(RECIP_SHIFT + 1))
        pass2 = Signal()

        run, done = Signal(), Signal()
        last_layer_op = len(ops) - 3

        def op_done():
            """End of the current op: the next op, or the end of the token's step."""
            with m.If((pc == len(ops) - 1) | ((pc == last_layer_op) & ~want)):
                m.next = "FINISH"
            with m.Else():
                m.d.sync += pc.eq(pc + 1)
                m.next = "FETCH"

        def next_element(again):
            """Step ``i``: the op ends after its ``n``-th element, else ``again``."""
            m.d.sync += i.eq(i + 1)
            with m.If(i == f["n"] - 1):
                op_done()
            with m.Else():
                m.next = again

        def mul_start(a, b, n):
            m.d.comb += [mul.start.eq(1), mul.a.eq(a), mul.b.eq(b), mul.n.eq(n)]

        with m.FSM(name="engine"):
            with m.State("IDLE"), m.If(run):
                m.d.sync += pc.eq(0)
                m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += fetch.eq(1)
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                m.d.sync += [o.eq(0), i.eq(0), ig.eq(0), acc.eq(0), accj.eq(0), t.eq(0),
                             wp.eq(f["w_base"]), gp.eq(f["groups"]), pass2.eq(0),
                             qb.eq(ram_map["q"]), gb.eq(0), hg.eq(0), psum.eq(0)]
                with m.Switch(f["kind"]):
                    with m.Case(EMB):
                        m.next = "EMB_W"
                    with m.Case(NORM):
                        m.next = "NORM_SQ_A"
                    with m.Case(MV, HEAD):
                        m.next = "MV_ROW_A"
                    with m.Case(ROPE):
                        m.d.sync += qb.eq(f["src"])
                        m.next = "ROPE_A"
                    with m.Case(KVST):
                        m.d.sync += kvp.eq(f["kv_base"] + pos_kv)
                        m.next = "KV_A"
                    with m.Case(ATTN):
                        m.next = "ATT_HEAD"
                    with m.Case(RESID):
                        m.next = "RES_A"
                    with m.Case(SWIGLU):
                        m.d.sync += [M_r.eq(f["M"]), s_r.eq(f["s"])]
                        m.next = "SWI_A"
            with m.State("FINISH"):
                m.d.comb += done.eq(1)
                m.next = "IDLE"

            # -- embedding: x[o] = requant(w[t,o] (* g[t, o // G]), M[t], s[t], 16) ----------
            vocab_bits = bit_width(im.vocab) + 1
            with m.State("EMB_W"):
                mul_start(token, f["n_in"], vocab_bits)
                m.next = "EMB_W_WAIT"
            with m.State("EMB_W_WAIT"), m.If(~mul.busy):
                m.d.sync += wp.eq(f["w_base"] + mul.p)
                m.next = "EMB_G" if im.embed.groups is not None else "EMB_ROW_A"
            if im.embed.groups is not None:
                with m.State("EMB_G"):
                    mul_start(token, -(-im.embed.n_in // im.embed.group_size), vocab_bits)
                    m.next = "EMB_G_WAIT"
                with m.State("EMB_G_WAIT"), m.If(~mul.busy):
                    m.d.sync += gp.eq(f["groups"] + mul.p)
                    m.next = "EMB_ROW_A"
            with m.State("EMB_ROW_A"):
                m.d.comb += c_rd.addr.eq(f["rows"] + (token << 1))
                m.next = "EMB_ROW_B"
            with m.State("EMB_ROW_B"):
                m.d.comb += c_rd.addr.eq(f["rows"] + (token << 1) + 1)
                m.d.sync += M_r.eq(c_val)
                m.next = "EMB_ROW_C"
            with m.State("EMB_ROW_C"):
                m.d.sync += s_r.eq(c_val)
                m.next = "EMB_EL_A"
            with m.State("EMB_EL_A"):
                m.d.comb += [w_addr.eq(wp), c_rd.addr.eq(gp)]
                m.next = "EMB_EL_B"
            with m.State("EMB_EL_B"):
                m.d.sync += [wp.eq(wp + 1), ig.eq(ig + 1)]
                with m.If(ig == f["gsize"] - 1):
                    m.d.sync += [ig.eq(0), gp.eq(gp + 1)]
                if im.embed.groups is not None:
                    mul_start(w_val, c_sval, 16)
                    m.next = "EMB_EL_G"
                else:
                    m.d.sync += acc.eq(w_val)
                    m.next = "REQ"
            if im.embed.groups is not None:
                with m.State("EMB_EL_G"), m.If(~mul.busy):
                    m.d.sync += acc.eq(mul.p)
                    m.next = "REQ"

            # -- requantization of acc by (M_r, s_r); writes by op kind ----------------------
            with m.State("REQ"):
                mul_start(acc, M_r, 17)
                m.next = "REQ_WAIT"
            with m.State("REQ_WAIT"), m.If(~mul.busy):
                round_shift(mul.p, s_r)
                m.next = "REQ_WRITE"
            with m.State("REQ_WRITE"):
                y = Mux(f["out16"], sat16, sat8)
                m.d.sync += o.eq(o + 1)
                is_last = o == f["n"] - 1
                with m.Switch(f["kind"]):
                    with m.Case(HEAD), m.If((o == 0) | (sat16 > best)):
                        m.d.sync += [best.eq(sat16), best_idx.eq(o)]
                    with m.Default():
                        m.d.comb += [r_wr.en.eq(1), r_wr.addr.eq(f["dst"] + o),
                                     r_wr.data.eq(y)]
                with m.If(is_last):
                    op_done()
                with m.Else(), m.Switch(f["kind"]):
                    with m.Case(EMB):
                        m.next = "EMB_EL_A"
                    with m.Case(SWIGLU):
                        m.next = "SWI_A"
                    with m.Default():
                        m.next = "MV_ROW_A"

            # -- matrix-vector product, one row at a time ------------------------------------
            with m.State("MV_ROW_A"):
                m.d.comb += c_rd.addr.eq(f["rows"] + (o << 1))
                m.next = "MV_ROW_B"
            with m.State("MV_ROW_B"):
                m.d.comb += c_rd.addr.eq(f["rows"] + (o << 1) + 1)
                m.d.sync += M_r.eq(c_val)
                m.next = "MV_ROW_C"
            with m.State("MV_ROW_C"):
                m.d.sync += [s_r.eq(c_val), acc.eq(0), accj.eq(0), i.eq(0), ig.eq(0)]
                m.next = "MV_MAC_A"
            with m.State("MV_MAC_A"):
                m.d.comb += [w_addr.eq(wp), r_rd.addr.eq(f["src"] + i)]
                m.next = "MV_MAC_B"
            with m.State("MV_MAC_B"):
                m.d.comb += [fa.eq(w_val), fb.eq(r_sval)]
                m.d.sync += [accj.eq(accj + fp), wp.eq(wp + 1), i.eq(i + 1), ig.eq(ig + 1)]
                with m.If((ig == f["gsize"] - 1) | (i == f["n_in"] - 1)):
                    m.next = "MV_GRP_A"
                with m.Else():
                    m.next = "MV_MAC_A"
            with m.State("MV_GRP_A"):
                with m.If(f["grouped"].bool()):
                    m.d.comb += c_rd.addr.eq(gp)
                    m.next = "MV_GRP_B"
                with m.Else():
                    m.d.sync += acc.eq(accj)
                    m.next = "REQ"
            with m.State("MV_GRP_B"):
                mul_start(accj, c_sval, 16)
                m.next = "MV_GRP_C"
            with m.State("MV_GRP_C"), m.If(~mul.busy):
                m.d.sync += [acc.eq(acc + mul.p), gp.eq(gp + 1), accj.eq(0), ig.eq(0)]
                with m.If(i == f["n_in"]):
                    m.next = "REQ"
                with m.Else():
                    m.next = "MV_MAC_A"

            # -- RMSNorm ---------------------------------------------------------------------
            with m.State("NORM_SQ_A"):
                m.d.comb += r_rd.addr.eq(f["src"] + i)
                m.next = "NORM_SQ_B"
            with m.State("NORM_SQ_B"):
                m.d.comb += [fa.eq(r_sval), fb.eq(r_sval)]
                m.d.sync += [acc.eq(acc + fp), i.eq(i + 1)]
                with m.If(i == f["n"] - 1):
                    m.next = "NORM_U"
                with m.Else():
                    m.next = "NORM_SQ_A"
            with m.State("NORM_U"):
                m.d.sync += [nm.eq(acc + f["eps"]), ne.eq(0), steps.eq(0)]
                m.next = "NORM_STEP"
            with m.State("NORM_STEP"):
                with m.If(nm >= 1024):
                    m.d.sync += [nm.eq(nm >> 2), ne.eq(ne + 2)]
                with m.Elif(nm < RSQRT_BASE):
                    m.d.sync += [nm.eq(nm << 2), ne.eq(ne - 2)]
                m.d.sync += steps.eq(steps + 1)
                with m.If(steps == NORM_STEPS - 1):
                    m.next = "NORM_R_A"
            with m.State("NORM_R_A"):
                m.d.comb += c_rd.addr.eq(im.rsqrt + nm - RSQRT_BASE)
                m.next = "NORM_R_B"
            with m.State("NORM_R_B"):
                m.d.sync += [nm.eq(c_val), i.eq(0)]
                m.next = "NORM_EL_A"
            with m.State("NORM_EL_A"):
                m.d.comb += [r_rd.addr.eq(f["src"] + i), c_rd.addr.eq(f["gains"] + i)]
                m.next = "NORM_EL_B"
            with m.State("NORM_EL_B"):
                m.d.comb += [fa.eq(r_sval), fb.eq(nm[:16])]
                mul_start(fp, c_sval, 16)
                m.next = "NORM_EL_WAIT"
            with m.State("NORM_EL_WAIT"), m.If(~mul.busy):
                round_shift(mul.p, RSQRT_BITS + (ne >> 1) + f["nshift"])
                m.next = "NORM_EL_WRITE"
            with m.State("NORM_EL_WRITE"):
                m.d.comb += [r_wr.en.eq(1), r_wr.addr.eq(f["dst"] + i),
                             r_wr.data.eq(sat8)]
                next_element("NORM_EL_A")

            # -- RoPE: per head, per pair ----------------------------------------------------
            if im.pairing == "half":
                ia, ib = i, i + half
            else:
                ia, ib = i << 1, (i << 1) + 1
            with m.State("ROPE_A"):
                m.d.comb += [r_rd.addr.eq(qb + ia), c_rd.addr.eq(im.cos + pos_rope + i)]
                m.next = "ROPE_B"
            with m.State("ROPE_B"):
                m.d.comb += [r_rd.addr.eq(qb + ib), c_rd.addr.eq(im.sin + pos_rope + i)]
                m.d.sync += [av.eq(r_sval), cv.eq(c_sval)]
                m.next = "ROPE_C"
            with m.State("ROPE_C"):
                m.d.sync += [bv.eq(r_sval), sv.eq(c_sval)]
                m.next = "ROPE_AC"
            with m.State("ROPE_AC"):
                m.d.comb += [fa.eq(av), fb.eq(cv)]
                m.d.sync += acc.eq(fp)
                m.next = "ROPE_BS"
            with m.State("ROPE_BS"):
                m.d.comb += [fa.eq(bv), fb.eq(sv)]
                round_shift(acc - fp, ROPE_FRAC_BITS)
                m.next = "ROPE_WA"
            with m.State("ROPE_WA"):
                m.d.comb += [r_wr.en.eq(1), r_wr.addr.eq(qb + ia), r_wr.data.eq(sat8),
                             fa.eq(av), fb.eq(sv)]
                m.d.sync += acc.eq(fp)
                m.next = "ROPE_BC"
            with m.State("ROPE_BC"):
                m.d.comb += [fa.eq(bv), fb.eq(cv)]
                round_shift(acc + fp, ROPE_FRAC_BITS)
                m.next = "ROPE_WB"
            with m.State("ROPE_WB"):
                m.d.comb += [r_wr.en.eq(1), r_wr.addr.eq(qb + ib), r_wr.data.eq(sat8)]
                m.d.sync += i.eq(i + 1)
                with m.If(i == half - 1):
                    m.d.sync += [i.eq(0), o.eq(o + 1), qb.eq(qb + hd)]
                    with m.If(o == f["n"] - 1):
                        op_done()
                    with m.Else():
                        m.next = "ROPE_A"
                with m.Else():
                    m.next = "ROPE_A"

            # -- KV store: kv[layer, pos, j] = {v[j], k[j]} ----------------------------------
            with m.State("KV_A"):
                m.d.comb += r_rd.addr.eq(ram_map["k"] + i)
                m.next = "KV_B"
            with m.State("KV_B"):
                m.d.comb += r_rd.addr.eq(ram_map["v"] + i)
                m.d.sync += av.eq(r_sval)
                m.next = "KV_C"
            with m.State("KV_C"):
                m.d.comb += [kv_addr.eq(kvp), kv_we.eq(1), kv_wdata.eq(Cat(av[:8], r_sval[:8]))]
                m.d.sync += kvp.eq(kvp + 1)
                next_element("KV_A")

            # -- attention, per head: max pass, softmax pass, reciprocal, output pass --------
            with m.State("ATT_HEAD"):
                m.d.sync += [t.eq(0), kvp.eq(f["kv_base"] + gb), pass2.eq(0), psum.eq(0)]
                m.next = "ATT_SC_START"
            with m.State("ATT_SC_START"):
                m.d.sync += [acc.eq(0), i.eq(0)]
                m.next = "ATT_SC_A"
            with m.State("ATT_SC_A"):
                m.d.comb += [r_rd.addr.eq(qb + i), kv_addr.eq(kvp + i)]
                m.next = "ATT_SC_B"
            with m.State("ATT_SC_B"):
                m.d.comb += [fa.eq(r_sval), fb.eq(k_val)]
                m.d.sync += [acc.eq(acc + fp), i.eq(i + 1)]
                with m.If(i == hd - 1):
                    m.next = "ATT_SC_DONE"
                with m.Else():
                    m.next = "ATT_SC_A"
            with m.State("ATT_SC_DONE"):
                with m.If(~pass2):
                    with m.If((t == 0) | (acc > mx)):
                        m.d.sync += mx.eq(acc)
                    m.d.sync += [t.eq(t + 1), kvp.eq(kvp + kvd)]
                    with m.If(t == pos):
                        m.d.sync += [t.eq(0), kvp.eq(f["kv_base"] + gb), pass2.eq(1)]
                    m.next = "ATT_SC_START"
                with m.Else():
                    mul_start(acc - mx, f["M"], 17)
                    m.next = "ATT_D"
            with m.State("ATT_D"), m.If(~mul.busy):
                round_shift(mul.p, f["s"])
                m.next = "ATT_EXP"
            with m.State("ATT_EXP"):
                d = -rs_out
                m.d.comb += c_rd.addr.eq(im.exp2 + d[:EXP_FRAC_BITS])
                m.d.sync += dexp.eq(d)
                m.next = "ATT_PR"
            with m.State("ATT_PR"):
                shift = dexp[EXP_FRAC_BITS:]
                pr = Signal(16)
                m.d.comb += pr.eq(c_val >> Mux(shift > 16, 16, shift)[:5])
                m.d.comb += [r_wr.en.eq(1), r_wr.addr.eq(ram_map["pr"] + t), r_wr.data.eq(pr)]
                m.d.sync += [psum.eq(psum + pr), t.eq(t + 1), kvp.eq(kvp + kvd)]
                with m.If(t == pos):
                    m.next = "ATT_RECIP"
                with m.Else():
                    m.next = "ATT_SC_START"
            with m.State("ATT_RECIP"):
                m.d.comb += [recip.start.eq(1), recip.d.eq(psum)]
                m.next = "ATT_RECIP_WAIT"
            with m.State("ATT_RECIP_WAIT"), m.If(~recip.busy):
                m.d.sync += [recip_r.eq(recip.q), i.eq(0)]
                m.next = "ATT_OUT_START"
            with m.State("ATT_OUT_START"):
                m.d.sync += [acc.eq(0), t.eq(0), kvp.eq(f["kv_base"] + gb + i)]
                m.next = "ATT_OUT_A"
            with m.State("ATT_OUT_A"):
                m.d.comb += [r_rd.addr.eq(ram_map["pr"] + t), kv_addr.eq(kvp)]
                m.next = "ATT_OUT_B"
            with m.State("ATT_OUT_B"):
                m.d.comb += [fa.eq(r_rd.data), fb.eq(v_val)]
                m.d.sync += [acc.eq(acc + fp), t.eq(t + 1), kvp.eq(kvp + kvd)]
                with m.If(t == pos):
                    m.next = "ATT_OUT_MUL"
                with m.Else():
                    m.next = "ATT_OUT_A"
            with m.State("ATT_OUT_MUL"):
                mul_start(acc, recip_r, 27)
                m.next = "ATT_OUT_WAIT"
            with m.State("ATT_OUT_WAIT"), m.If(~mul.busy):
                round_shift(mul.p, RECIP_SHIFT)
                m.next = "ATT_OUT_WRITE"
            with m.State("ATT_OUT_WRITE"):
                m.d.comb += [r_wr.en.eq(1), r_wr.addr.eq(f["dst"] + qb - ram_map["q"] + i),
                             r_wr.data.eq(sat8)]
                m.d.sync += i.eq(i + 1)
                with m.If(i == hd - 1):
                    m.d.sync += [o.eq(o + 1), qb.eq(qb + hd), hg.eq(hg + 1)]
                    with m.If(hg == group - 1):
                        m.d.sync += [hg.eq(0), gb.eq(gb + hd)]
                    with m.If(o == f["n"] - 1):
                        op_done()
                    with m.Else():
                        m.next = "ATT_HEAD"
                with m.Else():
                    m.next = "ATT_OUT_START"

            # -- residual add: x = sat_16(x + y) ---------------------------------------------
            with m.State("RES_A"):
                m.d.comb += r_rd.addr.eq(ram_map["x"] + i)
                m.next = "RES_B"
            with m.State("RES_B"):
                m.d.comb += r_rd.addr.eq(ram_map["y"] + i)
                m.d.sync += av.eq(r_sval)
                m.next = "RES_C"
            with m.State("RES_C"):
                res = Signal(signed(16))
                saturate(res, av + r_sval)
                m.d.comb += [r_wr.en.eq(1), r_wr.addr.eq(ram_map["x"] + i), r_wr.data.eq(res)]
                next_element("RES_A")

            # -- SwiGLU: hid = requant(SILU[gate + 128] * up, M_h, s_h, 8) -------------------
            with m.State("SWI_A"):
                m.d.comb += r_rd.addr.eq(ram_map["gate"] + o)
                m.next = "SWI_B"
            with m.State("SWI_B"):
                m.d.comb += [r_rd.addr.eq(ram_map["up"] + o),
                             c_rd.addr.eq(f["silu"] + r_sval + 128)]
                m.next = "SWI_C"
            with m.State("SWI_C"):
                m.d.comb += [fa.eq(c_sval), fb.eq(r_sval)]
                m.d.sync += acc.eq(fp)
                m.next = "REQ"

        # -- the generation loop (Decoder's) ------------------------------------------------
        with m.FSM(name="control", init="PROMPT"):
            with m.State("FEED"):
                m.d.comb += [self.busy.eq(1), run.eq(1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(done):
                    m.d.sync += [pos.eq(pos + 1), pos_rope.eq(pos_rope + half),
                                 pos_kv.eq(pos_kv + kvd)]
                    with m.If(want):
                        m.next = "EMIT"
                    with m.Else():
                        m.next = "PROMPT"
            loop.states(m, result=best_idx)
        with m.If(~loaded):
            m.d.comb += self.busy.eq(1)
        top.submodules.engine = ResetInserter(self.start)(m)
        return top

    def _weight_ram(self, m, top, w_addr, loaded):
        """The weights RAM of ``weight_store="flash"``, written from ``weights`` until
        ``loaded``; returns the weight at the address of the cycle before."""
        words, lane = self._weight_words, self._image.weight_lane_bits
        select_bits = (16 // lane - 1).bit_length()
        m.submodules.wram = wram = SinglePortRAM(len(words))
        count = Signal(range(len(words)))
        take = self.weights.valid & ~loaded
        top.d.comb += self.weights.ready.eq(~loaded)
        with top.If(take):
            top.d.sync += count.eq(count + 1)
            with top.If(count == len(words) - 1):
                top.d.sync += loaded.eq(1)
        field = Signal(range(1 << select_bits)) if select_bits else Const(0)
        m.d.comb += [wram.addr.eq(Mux(loaded, w_addr >> select_bits, count)),
                     wram.wdata.eq(self.weights.payload), wram.we.eq(take)]
        if select_bits:
            m.d.sync += field.eq(w_addr[:select_bits])
        return wram.rdata.word_select(field, lane).as_signed()


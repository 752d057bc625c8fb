"""cocotb stress bench of the whole decoder (:class:`hardwire.hdl.decoder.Decoder`, top
``hardwire_top``): random idle and backpressure on both streams, ``start`` and ``rst`` at chosen
cycles, every transfer and every status change recorded cycle by cycle.

Parameters (from :func:`hardwire.sim.cocotb_stream.params`):

- ``token_bits``: the payload's token field width; bit ``token_bits`` is ``last``.
- ``max_cycles``: per sequence; the bench fails when a sequence runs longer.
- ``watch``: cycles the bench keeps offering the next prompt token after ``error`` or
  ``context_full`` rose (the decoder must not take it) before it ends the sequence.
- ``sequences``: a list of::

      {"prompt": [ids], "max_new": n, "start": true,
       "idle": <pause spec or null>, "stall": <pause spec or null>,
       "event": null | {"action": "rst" | "start", "at_cycle": c}
                     | {"action": "rst" | "start", "after_tokens": k, "delay": d,
                        "hold": false}}

  ``last`` is set on the final prompt token; ``max_new`` is driven from the sequence's first cycle
  and changed to ``max_new + 1`` (mod 2**16) once the final prompt token is taken, to check that
  the decoder sampled it at that transfer. ``start`` pulses ``start`` in the sequence's first
  cycle (the first prompt token may already be offered then; it must not be taken). ``idle`` and
  ``stall`` are :func:`~hardwire.sim.cocotb_stream.pauses` specs: an idle draw is made in each
  cycle in which the next prompt token is not yet offered and ``i.ready`` was high in the previous
  cycle (so every idle cycle is one the decoder could have used); a stall draw drops ``o.ready``
  for one cycle. ``event`` pulses ``start`` or ``rst`` for one cycle, either ``c`` cycles after
  the sequence's first cycle or ``d`` cycles after the cycle of the ``k``-th output transfer
  (``d = 0``: the next cycle; with ``hold``, ``o.ready`` stays low from that transfer to the
  event, so that the next token, once out, waits on ``o`` and is dropped). In an ``rst`` cycle
  the bench drives ``i.valid`` and ``o.ready`` low; in a ``start`` cycle it leaves them as they
  were (the decoder must refuse both transfers). The sequence ends right after its event.

A sequence without an event ends once every prompt token was taken (or ``error`` /
``context_full`` rose) and ``busy`` is low in a later cycle (plus ``watch`` cycles when a flag is
high). Cycles in which nothing can change are skipped by waiting on the decoder's outputs.

Result per sequence: ``begin`` (its first cycle), ``inputs`` (``[cycle, ready_since]`` per prompt
transfer: the transfer cycle and the first cycle of the run of ``i.ready`` high it happened in),
``outputs`` (``[token, last, valid_since, cycle]`` per output transfer), ``flags`` (``[cycle,
busy, error, context_full, i.ready]`` at the first cycle and at every change), ``event_cycle``
(or null), ``dropped`` (the output payload that was waiting on ``o``, valid and not taken, when
the event fired, or null) and ``end``. Top level: ``violations`` (protocol rules checked in
every cycle: ``i.ready == ~busy & ~error & ~context_full`` outside start/reset cycles,
``o.valid`` implies ``busy``, no transfer in a start/reset cycle, ``o.valid`` and ``o.payload``
held until the transfer) and ``extra_outputs`` (transfers after the last sequence, over 64
cycles with ``o.ready`` high). Cycle ``c`` is the ``c``-th clock period after the clock
started; a transfer's cycle is the one whose closing edge moves it.
"""

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, First, ReadOnly, Timer
from cocotb.utils import get_sim_time

from hardwire.sim.cocotb_stream import params, pauses, start, write_result

PERIOD_NS = 10
DRAIN_CYCLES = 64


def _cycle():
    return int(get_sim_time("ns")) // PERIOD_NS


def _draw(pause):
    return pause is not None and next(pause)


class Host:
    """Both ends of the decoder's streams and its control inputs, one sequence at a time."""

    def __init__(self, dut, p):
        self.dut = dut
        self.token_bits = p["token_bits"]
        self.max_cycles = p["max_cycles"]
        self.watch = p["watch"]
        self.violations = []
        self.held = None            # the output payload seen valid and not taken last cycle

    def _sample(self):
        d = self.dut
        return {"i_ready": int(d.i__ready.value), "o_valid": int(d.o__valid.value),
                "o_payload": d.o__payload.value.to_unsigned(), "busy": int(d.busy.value),
                "error": int(d.error.value), "full": int(d.context_full.value)}

    def _check(self, c, s, pulse, offering, o_ready):
        bad = self.violations.append
        if pulse:
            if s["i_ready"] or s["o_valid"]:
                bad(f"cycle {c}: {pulse} high with i.ready={s['i_ready']} "
                    f"o.valid={s['o_valid']}")
            self.held = None
            return
        if s["i_ready"] != int(not (s["busy"] or s["error"] or s["full"])):
            bad(f"cycle {c}: i.ready={s['i_ready']} with busy={s['busy']} "
                f"error={s['error']} context_full={s['full']}")
        if s["o_valid"] and not s["busy"]:
            bad(f"cycle {c}: o.valid high while busy is low")
        if self.held is not None and (not s["o_valid"] or s["o_payload"] != self.held):
            bad(f"cycle {c}: o dropped or changed {self.held:#x} before its transfer")
        self.held = s["o_payload"] if s["o_valid"] and not o_ready else None

    async def sequence(self, seq):
        d, tb = self.dut, self.token_bits
        prompt = seq["prompt"]
        words = [t | (int(k == len(prompt) - 1) << tb) for k, t in enumerate(prompt)]
        idle, stall = pauses(seq.get("idle")), pauses(seq.get("stall"))
        event = seq.get("event")
        begin = _cycle() + 1
        fire_at = begin + event["at_cycle"] if event and "at_cycle" in event else None
        r = {"begin": begin, "inputs": [], "outputs": [], "flags": [], "event_cycle": None}
        sent, offering, ready_since, valid_since = 0, False, None, None
        last_ready, last_in, halt_left = 0, None, None
        pulse_start, holding = seq.get("start", True), False
        flags = None
        first = True
        while True:
            await FallingEdge(d.clk)
            c = _cycle()
            if c - begin > self.max_cycles:
                raise AssertionError(f"sequence {seq} still running after {self.max_cycles} "
                                     f"cycles: {len(r['inputs'])} inputs, {r['outputs']}")
            if first:
                d.max_new.value = seq["max_new"]
                first = False
            elif sent == len(words):
                # Sampled with the last prompt token: a later value must change nothing.
                d.max_new.value = (seq["max_new"] + 1) % 2 ** 16
            pulse, fired = None, False
            if pulse_start:
                pulse, pulse_start = "start", False
            elif fire_at is not None and c >= fire_at:
                pulse, fired = event["action"], True
            remaining = sent < len(words)
            if not offering and remaining and (idle is None or (last_ready and not _draw(idle))):
                offering = True
                d.i__payload.value = words[sent]
            o_ready = int(not _draw(stall) and not holding)
            if pulse == "rst":
                offering, o_ready = False, 0
            d.i__valid.value = int(offering)
            d.o__ready.value = o_ready
            d.start.value = int(pulse == "start")
            d.rst.value = int(pulse == "rst")
            await ReadOnly()
            s = self._sample()
            waiting = self.held
            self._check(c, s, pulse, offering, o_ready)
            now = (s["busy"], s["error"], s["full"], s["i_ready"])
            if now != flags:
                r["flags"].append([c, *now])
                flags = now
            if s["i_ready"] and not last_ready:
                ready_since = c
            last_ready = s["i_ready"]
            if s["o_valid"] and valid_since is None:
                valid_since = c
            if offering and s["i_ready"]:
                if pulse:
                    self.violations.append(f"cycle {c}: input taken in a {pulse} cycle")
                r["inputs"].append([c, ready_since])
                sent, offering, last_in = sent + 1, False, c
            if o_ready and s["o_valid"]:
                if pulse:
                    self.violations.append(f"cycle {c}: output taken in a {pulse} cycle")
                word = s["o_payload"]
                r["outputs"].append([word & ((1 << tb) - 1), word >> tb & 1, valid_since, c])
                valid_since = None
                if event and event.get("after_tokens") == len(r["outputs"]):
                    fire_at = c + 1 + event["delay"]
                    holding = event.get("hold", False)
            if not s["o_valid"]:
                valid_since = None
            if fired:
                r["event_cycle"], r["dropped"] = c, waiting
                break
            if halt_left is None and not pulse and (s["error"] or s["full"]):
                halt_left = self.watch
            if halt_left is not None:
                # Keep offering the next prompt token: the halted decoder must not take it.
                if halt_left == 0 and not s["busy"]:
                    break
                halt_left = max(0, halt_left - 1)
                continue
            if sent == len(words) and last_in is not None and c > last_in and not s["busy"]:
                break
            # Nothing can change until the decoder does: skip to its next output change.
            waiting_in = offering or not remaining or not last_ready
            if waiting_in and not s["o_valid"] and not pulse:
                triggers = [d.i__ready.value_change, d.o__valid.value_change,
                            d.busy.value_change, d.error.value_change,
                            d.context_full.value_change,
                            Timer((self.max_cycles + begin - c + 1) * PERIOD_NS, unit="ns")]
                if fire_at is not None:
                    triggers.append(ClockCycles(d.clk, max(1, fire_at - c)))
                await First(*triggers)
        r["end"] = _cycle()
        return r

    async def drain(self):
        extra = []
        for _ in range(DRAIN_CYCLES):
            await FallingEdge(self.dut.clk)
            self.dut.i__valid.value = 0
            self.dut.o__ready.value = 1
            self.dut.start.value = 0
            self.dut.rst.value = 0
            await ReadOnly()
            if self.dut.o__valid.value:
                extra.append(self.dut.o__payload.value.to_unsigned())
        return extra


@cocotb.test()
async def decoder_stress(dut):
    p = params()
    assert len(dut.i__payload) == p["token_bits"] + 1, "input port width"
    dut.start.value = 0
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.max_new.value = 0
    await start(dut, period_ns=PERIOD_NS)
    host = Host(dut, p)
    results = []
    for seq in p["sequences"]:
        results.append(await host.sequence(seq))
    extra = await host.drain()
    write_result({"sequences": results, "violations": host.violations,
                  "extra_outputs": extra, "end_cycle": _cycle()})

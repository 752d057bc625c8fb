"""Stream helpers for Amaranth simulator testbenches: every unit's tests speak one protocol.

The helpers drive and observe ``amaranth.lib.stream`` interfaces from ``async`` testbenches
(``sim.add_testbench(async def bench(ctx): ...)``). They follow the stream rules exactly:

- A producer raises ``valid`` without looking at ``ready`` and keeps ``valid`` and ``payload``
  stable until the transfer happens (the clock edge where ``valid`` and ``ready`` are both high).
- A consumer may raise and drop ``ready`` at will.

Idle cycles (producer) and backpressure (consumer) come from *pause iterators*, as in
cocotbext-axi: an iterator yielding one truthy/falsy value per clock cycle; truthy means "pause this
cycle". ``itertools.cycle([1, 1, 1, 0])`` pauses three cycles out of four; :func:`random_pauses`
draws pauses from a seeded :class:`random.Random`. A pause iterator is shared across calls (it is
not restarted per transfer), so pass an iterator, not a list. A producer only consults it *before*
raising ``valid``: once ``valid`` is high it stays high until the transfer.

:func:`stream_monitor` records transfers with their cycle (for latency and throughput) and
:func:`stream_check` asserts that a producer (usually the design) keeps ``valid`` and ``payload``
until the transfer; both are passive processes.

Successive calls without pauses transfer one item per cycle: ``stream_put`` lowers ``valid`` and the
next call raises it again at the same simulation instant, so the design never sees a gap.

The helpers wait with plain ``await ctx.tick().sample(...)`` rather than ``tick().until()`` or
``async for``: when one process fails, the simulator abandons the others, and an abandoned
``until()`` raises a second, confusing error ("aclose(): asynchronous generator is already
running") while the first one is being reported.
"""

import random

__all__ = ["random_pauses", "stream_put", "stream_get", "stream_put_all", "stream_get_all",
           "stream_monitor", "stream_check", "watchdog"]


def random_pauses(rng, probability):
    """An endless pause iterator: each cycle pauses with ``probability``, drawn from ``rng``.

    ``rng`` must be a :class:`random.Random` (seeded by the caller, so failures reproduce).
    """
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, not {rng!r}")
    if not (isinstance(probability, (int, float)) and 0 <= probability < 1):
        raise ValueError(f"probability must be a number in [0, 1), not {probability!r}")

    def pauses():
        while True:
            yield rng.random() < probability
    return pauses()


def _check_pause(pause):
    if pause is not None and iter(pause) is not pause:
        raise TypeError(f"pause must be an iterator (e.g. itertools.cycle([1, 0])), not "
                        f"{pause!r}")


async def stream_put(ctx, stream, payload, *, pause=None):
    """Transfer ``payload`` into ``stream`` (a stream the design consumes); returns after the
    clock edge at which the transfer happened.

    With ``pause``, first idles (``valid`` low) for as long as the pause iterator says so, one
    value per cycle, then raises ``valid`` and holds it until ``ready``.
    """
    _check_pause(pause)
    if pause is not None:
        while next(pause):
            await ctx.tick()
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    while not (await ctx.tick().sample(stream.ready))[2]:
        pass
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, pause=None):
    """Receive one payload from ``stream`` (a stream the design produces) and return it.

    With ``pause``, ``ready`` is low in every cycle for which the pause iterator yields a truthy
    value (backpressure), high otherwise; the transfer happens at the first edge where ``ready``
    and ``valid`` are both high.
    """
    _check_pause(pause)
    while True:
        ready = pause is None or not next(pause)
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            ctx.set(stream.ready, 0)
            return payload


async def stream_put_all(ctx, stream, payloads, *, pause=None):
    """:func:`stream_put` each item of ``payloads`` in order (back to back when not paused)."""
    for payload in payloads:
        await stream_put(ctx, stream, payload, pause=pause)


async def stream_get_all(ctx, stream, count, *, pause=None):
    """:func:`stream_get` ``count`` payloads in order and return them as a list."""
    return [await stream_get(ctx, stream, pause=pause) for _ in range(count)]


async def stream_monitor(ctx, stream, transfers):
    """Passively record every transfer on ``stream`` as ``(cycle, payload)`` into ``transfers``.

    ``cycle`` counts clock edges since the monitor started (the first edge is 0): two monitors
    started together share one time base, so latency and throughput are differences of cycles.
    Never drives anything; run it with ``sim.add_process`` or as a background testbench
    (``sim.add_testbench(..., background=True)``). It runs until the simulation ends.
    """
    cycle = 0
    while True:
        _, _, valid, ready, payload = await ctx.tick().sample(stream.valid, stream.ready,
                                                              stream.payload)
        if valid and ready:
            transfers.append((cycle, payload))
        cycle += 1


async def stream_check(ctx, stream):
    """Passively check the producer side of the stream rules on ``stream``, raising
    ``AssertionError`` (which fails the simulation) the cycle a rule breaks: once ``valid`` is
    high it must stay high, with the same ``payload``, until the transfer.

    Use it on a design's output streams (and on the helpers themselves); run it with
    ``sim.add_process``.
    """
    cycle, held = 0, None
    while True:
        _, rst, valid, ready, payload = await ctx.tick().sample(stream.valid, stream.ready,
                                                                stream.payload)
        if rst:
            held = None
        else:
            if held is not None:
                assert valid, f"cycle {cycle}: valid dropped before the transfer of {held!r}"
                assert payload == held, (f"cycle {cycle}: payload changed from {held!r} to "
                                         f"{payload!r} before the transfer")
            held = payload if valid and not ready else None
        cycle += 1


def watchdog(cycles):
    """A process that fails the simulation with ``TimeoutError`` if it is still running after
    ``cycles`` clock edges: ``sim.add_process(watchdog(1000))`` next to the testbenches, then
    ``sim.run()``. A background process does not keep the simulation alive, so a passing run
    stops as soon as the testbenches finish, while a design that loses an item cannot hang."""
    async def process(ctx):
        for _ in range(cycles):
            await ctx.tick()
        raise TimeoutError(f"simulation still running after {cycles} cycles")
    return process

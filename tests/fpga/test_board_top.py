# amaranth: UnusedElaboratable=no
"""The board top (UART framing, command parser, decoder) on Verilator, driven over its serial
lines with real bit timing: bytes in, tokens out, equal to the golden model. One build of a tiny
random model (~10 s with a cold Verilator cache), one bench run (~5 s)."""

import pytest
from board_helpers import DIVISOR, ENGINES, session, tiny_model_id, tiny_qm

from hardwire.board_link import command, parse_reply, session_commands
from hardwire.gen.serial_image import serial_image
from hardwire.hdl.board_top import (
    FLAG_BUSY,
    FLAG_CONTEXT_FULL,
    FLAG_ERROR,
    FLAG_LINK_ERROR,
    FLAG_WEIGHTS_ERROR,
    OP_LAST,
    OP_PROMPT,
    OP_START,
    OP_STATUS,
)
from hardwire.hdl.weight_loader import FLASH_OFFSET
from hardwire.sim.golden import GoldenModel


@pytest.fixture(scope="module")
def qm():
    return tiny_qm()


# The iCEBreaker carries the serial engine: its board top is proven the same way.
@pytest.mark.parametrize("engine", ENGINES)
def test_bytes_in_tokens_out(qm, engine, verilator_cache, tmp_path):
    golden = GoldenModel(qm)
    first = session_commands([3, 7, 1], 6)
    # The same sequence continued: the last generated token goes back in as a prompt token.
    expected_first = golden.generate([3, 7, 1], 6)
    second = session_commands([expected_first[-1], 2], 2, new_sequence=False)
    fresh = session_commands([11], 5)
    bad_token = session_commands([4, 19, 5], 3)       # 19 >= vocab: ERROR, the 'L' is dropped
    recover = session_commands([0], 2)
    full = session_commands([1] * 9, 10)   # context 12: the 4th new token is not fed back
    junk = [bytes([0x7E]), command(OP_STATUS)]
    commands = [*first, *second, *fresh, *bad_token, *recover, *full, *junk]
    top, result = session(qm, commands, verilator_cache, tmp_path, engine)
    assert result["idle_after"]
    replies = [parse_reply(bytes(b for frame in r for b in frame)) for r in result["replies"]]
    assert len(replies) == len(commands)
    assert all(r.status.value == tiny_model_id(qm, engine) for r in replies)
    at = iter(replies)

    def take(cmds):
        return [next(at) for _ in cmds]

    # A new sequence: 'S' and each 'P' answer with a status frame only, 'L' with the tokens.
    r = take(first)
    assert [x.tokens for x in r] == [(), (), (), tuple(expected_first)]
    assert r[0].status.flags == 0
    assert all(x.status.busy for x in r[1:3])        # a 'P' is answered while it computes
    assert r[3].status.flags == 0
    r = take(second)
    continued = GoldenModel(qm).generate([3, 7, 1, *expected_first, 2], 2)
    assert r[-1].tokens == tuple(continued)
    assert take(fresh)[-1].tokens == tuple(golden.generate([11], 5))
    r = take(bad_token)
    assert r[1].status.flags == FLAG_BUSY
    assert r[2].status.flags & (FLAG_ERROR | FLAG_BUSY) == FLAG_ERROR
    assert r[3].tokens == () and r[3].status.error
    r = take(recover)
    assert r[0].status.flags == 0 and r[-1].tokens == tuple(golden.generate([0], 2))
    r = take(full)
    assert r[-1].tokens == tuple(golden.generate([1] * 9, 4))
    assert r[-1].status.flags & FLAG_CONTEXT_FULL
    r = take(junk)
    assert r[0].status.link_error and r[1].status.link_error
    assert r[1].status.context_full


@pytest.mark.parametrize("engine", ENGINES)
def test_token_pacing(qm, engine, verilator_cache, tmp_path):
    """Generated token frames leave every max(cycles per token, 30 bit periods) cycles."""
    commands = session_commands([5, 6], 5)
    top, result = session(qm, commands, verilator_cache, tmp_path, engine)
    dec = top.decoder
    starts = result["frame_cycles"][-1][:-1]      # the 5 token frames
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps == [max(dec.cycles_per_token(2 + k), 30 * DIVISOR) for k in range(4)]


def test_weights_come_from_flash(qm, verilator_cache, tmp_path):
    """The iCEBreaker's flash-weights top wakes the flash, reads the image at FLASH_OFFSET once,
    and answers nothing but status before the weights are in."""
    commands = [command(OP_STATUS), *session_commands([2, 9], 3)]
    top, result = session(qm, commands, verilator_cache, tmp_path, "serial-flash")
    image = top.decoder.weight_image[0]
    assert result["flash_commands"] == [[0xAB, None, 0], [0x03, FLASH_OFFSET, len(image)]]
    replies = [parse_reply(bytes(b for frame in r for b in frame)) for r in result["replies"]]
    assert replies[0].status.busy and not replies[0].status.flags & FLAG_WEIGHTS_ERROR
    assert result["frame_cycles"][1][0] > top.loader.cycles     # 'S' waited for the weights
    assert replies[-1].tokens == tuple(GoldenModel(qm).generate([2, 9], 3))


@pytest.mark.parametrize("flash", ["erased", "one bit off", "another model"])
def test_wrong_flash_contents_are_reported(qm, flash, verilator_cache, tmp_path):
    """A flash without this design's weights: WEIGHTS_ERROR in every status frame after the
    load, and no token is computed from them."""
    image = bytearray(serial_image(qm).weight_flash_image()[0])
    if flash == "erased":
        contents = {}
    elif flash == "one bit off":
        image[len(image) // 2] ^= 0x04
        contents = {FLASH_OFFSET: bytes(image)}
    else:
        other = tiny_qm(seed=9)
        contents = {FLASH_OFFSET: serial_image(other).weight_flash_image()[0]}
    commands = session_commands([2, 9], 3)
    _, result = session(qm, commands, verilator_cache, tmp_path, "serial-flash", flash=contents)
    replies = [parse_reply(bytes(b for frame in r for b in frame)) for r in result["replies"]]
    assert all(r.status.flags & FLAG_WEIGHTS_ERROR for r in replies)
    assert all(r.tokens == () for r in replies)
    assert not any(r.status.error for r in replies)


def test_opcodes_are_distinct():
    assert len({OP_START, OP_PROMPT, OP_LAST, OP_STATUS}) == 4
    assert FLAG_LINK_ERROR == 32

# amaranth: UnusedElaboratable=no
"""``hardwire chat`` and the host side of the protocol (:mod:`hardwire.board_link`).

The chat command runs against bytes the board top produced on Verilator: the bench plays the
host's commands and records the replies, then ``chat`` talks to a port that replays them and
checks every byte it writes (shares the Verilator build with test_board_top, ~5 s more)."""

import pytest
from board_helpers import LANES, session, tiny_model_id, tiny_qm

from hardwire.board_link import BoardLink, Frame, command, parse_reply, session_commands
from hardwire.cli import main
from hardwire.errors import ConfigError, ToolchainError
from hardwire.gen.native import save_native
from hardwire.hdl.board_top import FLAG_ERROR, FLAG_LAST, FLAG_TOKEN, OP_STATUS
from hardwire.sim.golden import GoldenModel


class Replay:
    """A serial port that expects the recorded commands in order and answers each with the
    recorded reply."""

    def __init__(self, commands, replies):
        self.expect, self.replies, self.pending = list(commands), list(replies), b""

    def write(self, data):
        assert self.expect, f"unexpected command {data!r}"
        assert data == self.expect.pop(0)
        self.pending += self.replies.pop(0)

    def read(self, n):
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


def test_command_frames():
    assert command(ord("S"), 0x1234) == b"S\x34\x12"
    assert session_commands([5, 300], 7) == [b"S\x07\x00", b"P\x05\x00", b"L\x2c\x01"]
    assert session_commands([9], 1, new_sequence=False) == [b"N\x01\x00", b"L\x09\x00"]
    with pytest.raises(ConfigError, match="at least one token"):
        session_commands([], 3)
    with pytest.raises(ConfigError, match=r"\[0, 65535\]"):
        command(ord("P"), 1 << 16)


def test_parse_reply():
    reply = parse_reply(bytes([4, 0, FLAG_TOKEN, 9, 1, FLAG_TOKEN | FLAG_LAST, 0xEF, 0xBE, 0]))
    assert reply.tokens == (4, 265) and reply.status == Frame(0xBEEF, 0)
    for bad in (b"", bytes([1, 0]), bytes([1, 0, FLAG_TOKEN]), bytes([1, 0, 0, 2, 0, 0])):
        with pytest.raises(ToolchainError):
            parse_reply(bad)


def test_link_checks_the_model_id_and_times_out():
    link = BoardLink(Replay([command(OP_STATUS)], [bytes([1, 2, FLAG_ERROR])]), model_id=0x0201)
    assert link.status().error
    link = BoardLink(Replay([command(OP_STATUS)], [bytes([1, 2, 0])]), model_id=0x1111)
    with pytest.raises(ToolchainError, match="model id 0x0201, not 0x1111"):
        link.status()
    link = BoardLink(Replay([command(OP_STATUS)], [bytes([1])]))
    with pytest.raises(ToolchainError, match="did not answer"):
        link.status()


def test_chat_against_the_simulated_board(verilator_cache, tmp_path, monkeypatch, capsys):
    qm = tiny_qm()
    golden = GoldenModel(qm)
    n = 3
    turns = [[3, 7, 1], [2], [5, 6]]
    first = golden.generate(turns[0], n)
    # What chat must send: a status query, turn 1 as a new sequence, turn 2 continuing it
    # (3 + 2 + 2 + 3 - 1 <= context 12), turn 3 anew (it would need 14 positions).
    commands = [command(OP_STATUS), *session_commands(turns[0], n),
                *session_commands([first[-1], *turns[1]], n, new_sequence=False),
                *session_commands(turns[2], n)]
    _, result = session(qm, commands, verilator_cache, tmp_path / "bench")
    replies = [bytes(b for frame in r for b in frame) for r in result["replies"]]
    second = golden.generate([*turns[0], *first, *turns[1]], n)
    third = golden.generate(turns[2], n)

    port = Replay(commands, replies)
    opened = []

    def serial_for_url(url, **kw):
        opened.append((url, kw))
        return port

    import serial
    monkeypatch.setattr(serial, "serial_for_url", serial_for_url)
    save_native(qm, tmp_path / "tiny.hwq")
    argv = ["chat", str(tmp_path / "tiny.hwq"), "--lanes", str(LANES), "--port", "sim://board",
            "-n", str(n), *(a for t in turns for a in ("--tokens", ",".join(map(str, t))))]
    assert main(argv) == 0
    assert opened == [("sim://board", {"baudrate": 115200, "timeout": 5.0})]
    assert port.expect == []
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines == ["".join(f"{t}," for t in toks) for toks in (first, second, third)]
    assert f"model id {tiny_model_id(qm):#06x}" in out.err


def test_chat_says_when_the_flash_holds_no_weights(verilator_cache, tmp_path, monkeypatch,
                                                   capsys):
    """The iCEBreaker design with an erased flash: chat stops at the first WEIGHTS_ERROR and
    says what to program where."""
    qm = tiny_qm()
    commands = [command(OP_STATUS), session_commands([3], 2)[0]]
    _, result = session(qm, commands, verilator_cache, tmp_path / "bench", "serial-flash",
                        flash={})
    port = Replay(commands, [bytes(b for frame in r for b in frame) for r in result["replies"]])
    import serial
    monkeypatch.setattr(serial, "serial_for_url", lambda url, **kw: port)
    save_native(qm, tmp_path / "tiny.hwq")
    argv = ["chat", str(tmp_path / "tiny.hwq"), "--engine", "serial", "--weight-store", "flash",
            "--port", "sim://board", "-n", "2", "--tokens", "3"]
    assert main(argv) == 1
    assert port.expect == []
    err = capsys.readouterr().err
    assert "WEIGHTS_ERROR" in err and "iceprog -o 1024k hardwire_weights.bin" in err

"""The host side of the board's byte protocol (:mod:`hardwire.hdl.board_top`).

:func:`command` and :func:`session_commands` encode command frames; :func:`parse_reply` decodes
reply bytes; :class:`BoardLink` talks to a board over any object with ``write(bytes)`` and
``read(n) -> bytes`` that returns fewer bytes on a timeout (a ``serial.Serial``).
"""

from dataclasses import dataclass

from .errors import ConfigError, ToolchainError
from .hdl.board_top import (
    FLAG_BUSY,
    FLAG_CONTEXT_FULL,
    FLAG_ERROR,
    FLAG_LAST,
    FLAG_LINK_ERROR,
    FLAG_TOKEN,
    FLAG_WEIGHTS_ERROR,
    FRAME_BYTES,
    OP_LAST,
    OP_MAX_NEW,
    OP_PROMPT,
    OP_START,
    OP_STATUS,
)

__all__ = ["Frame", "Reply", "command", "session_commands", "parse_reply", "BoardLink"]


def command(opcode, arg=0):
    """The 3-byte command frame ``opcode, arg_lo, arg_hi``."""
    if not 0 <= arg < 1 << 16:
        raise ConfigError(f"a command argument must be in [0, 65535], not {arg!r}")
    return bytes([opcode, arg & 0xFF, arg >> 8])


def session_commands(prompt, max_new, *, new_sequence=True):
    """The commands that run ``prompt`` (token ids) and generate up to ``max_new`` tokens:
    ``'S'`` (or ``'N'`` to continue the sequence), ``'P'`` per prompt token but the last, ``'L'``.
    """
    prompt = list(prompt)
    if not prompt:
        raise ConfigError("a prompt needs at least one token")
    first = command(OP_START if new_sequence else OP_MAX_NEW, max_new)
    return [first, *(command(OP_PROMPT, t) for t in prompt[:-1]), command(OP_LAST, prompt[-1])]


@dataclass(frozen=True)
class Frame:
    """One reply frame: ``value`` (a token id, or the model id of a status frame) and ``flags``."""
    value: int
    flags: int

    @property
    def is_token(self):
        return bool(self.flags & FLAG_TOKEN)

    @property
    def last(self):
        return bool(self.flags & FLAG_LAST)

    @property
    def busy(self):
        return bool(self.flags & FLAG_BUSY)

    @property
    def context_full(self):
        return bool(self.flags & FLAG_CONTEXT_FULL)

    @property
    def error(self):
        return bool(self.flags & FLAG_ERROR)

    @property
    def link_error(self):
        return bool(self.flags & FLAG_LINK_ERROR)

    @property
    def weights_error(self):
        return bool(self.flags & FLAG_WEIGHTS_ERROR)


@dataclass(frozen=True)
class Reply:
    """The answer to one command: the generated token ids and the closing status frame."""
    tokens: tuple
    status: Frame


def parse_reply(data):
    """The :class:`Reply` in ``data`` (token frames then one status frame, nothing after);
    :class:`ToolchainError` if ``data`` is not exactly that."""
    if len(data) % FRAME_BYTES:
        raise ToolchainError(f"a reply of {len(data)} bytes is not a whole number of "
                             f"{FRAME_BYTES}-byte frames")
    frames = [Frame(data[k] | data[k + 1] << 8, data[k + 2])
              for k in range(0, len(data), FRAME_BYTES)]
    if not frames or frames[-1].is_token or any(not f.is_token for f in frames[:-1]):
        raise ToolchainError("a reply must be token frames followed by one status frame")
    return Reply(tuple(f.value for f in frames[:-1]), frames[-1])


class BoardLink:
    """Commands to a programmed board and its replies, one command at a time.

    ``port``: ``write(bytes)`` and ``read(n)``. ``model_id``: when not ``None``, every status
    frame must carry it (the board runs the model the host tokenizes for).
    """

    def __init__(self, port, *, model_id=None):
        self._port = port
        self._model_id = model_id

    def _frame(self):
        data = self._port.read(FRAME_BYTES)
        if len(data) < FRAME_BYTES:
            raise ToolchainError(f"the board did not answer (got {len(data)} of {FRAME_BYTES} "
                                 f"bytes of a reply frame before the timeout); is it "
                                 f"programmed with `hardwire fpga` and is the baud rate right?")
        return Frame(data[0] | data[1] << 8, data[2])

    def request(self, frame, on_token=None):
        """Send one command frame and return its :class:`Reply`; ``on_token(id)`` is called as
        each token frame arrives."""
        self._port.write(frame)
        tokens = []
        while (got := self._frame()).is_token:
            tokens.append(got.value)
            if on_token is not None:
                on_token(got.value)
        if self._model_id is not None and got.value != self._model_id:
            raise ToolchainError(f"the board runs model id {got.value:#06x}, not "
                                 f"{self._model_id:#06x}: it was built from another model or "
                                 f"options")
        return Reply(tuple(tokens), got)

    def status(self):
        """The status frame (``'Q'``)."""
        return self.request(command(OP_STATUS)).status

    def generate(self, prompt, max_new, *, new_sequence=True, on_token=None):
        """Run ``prompt`` and return the :class:`Reply` of the generation. Stops sending at the
        first command whose status shows ``ERROR``, ``CONTEXT_FULL``, ``LINK_ERROR`` or
        ``WEIGHTS_ERROR`` and returns its reply (with no tokens)."""
        reply = None
        for frame in session_commands(prompt, max_new, new_sequence=new_sequence):
            reply = self.request(frame, on_token)
            status = reply.status
            if status.error or status.context_full or status.link_error or status.weights_error:
                break
        return reply

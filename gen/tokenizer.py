"""Tokenizers of the three model formats, all speaking :class:`~hardwire.gen.model.Tokenizer`.

Common contract: ``encode(text)`` returns token ids *without* BOS/EOS (prepend ``spec.bos_id``
yourself); ``decode(ids)`` returns text and refuses ids outside the vocabulary with a
:class:`~hardwire.errors.HardwireError`; ``pieces[i]`` is the text of token ``i`` on its own
(for streaming output; byte tokens of a multi-byte character show as U+FFFD there, while
``decode`` of the whole sequence joins their bytes first).
"""

import operator
import re

from ..errors import HardwireError, ModelFormatError
from .model import Tokenizer

__all__ = ["HFTokenizer", "PieceTokenizer", "Llama2cTokenizer", "byte_level_table"]

SPIECE_SPACE = "\u2581"   # SentencePiece's "▁"
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _check_ids(ids, vocab_size, what):
    checked = []
    for i in ids:
        try:
            if isinstance(i, bool):
                raise TypeError
            i = operator.index(i)
        except TypeError:
            raise HardwireError(f"{what}: token id must be an integer, not {i!r}") from None
        if not 0 <= i < vocab_size:
            raise HardwireError(f"{what}: token id {i} is outside the vocabulary "
                                f"(expected 0..{vocab_size - 1})")
        checked.append(i)
    return checked


def _byte_of(piece):
    match = _BYTE_TOKEN.fullmatch(piece)
    return int(match.group(1), 16) if match else None


def byte_level_table():
    """GPT-2's byte -> printable character table (byte-level BPE vocabularies use it)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizer.json``, run by the ``tokenizers`` library.

    ``encode`` adds no special tokens; ``decode`` keeps special tokens as their text.
    """

    def __init__(self, path):
        try:
            import tokenizers
            self._tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:   # the library raises plain Exception subclasses of its own
            raise ModelFormatError(path, f"tokenizers cannot read it: {e}",
                                   field="tokenizer.json") from None
        self._path = str(path)
        size = self._tok.get_vocab_size(with_added_tokens=True)
        super().__init__(self._tok.decode([i], skip_special_tokens=False) for i in range(size))

    def encode(self, text):
        """Token ids of ``text`` (no BOS/EOS)."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids):
        """Text of ``ids``; special tokens are kept as their text."""
        ids = _check_ids(ids, self.vocab_size, self._path)
        return self._tok.decode(ids, skip_special_tokens=False)

    def to_json(self):
        """The ``tokenizer.json`` text of this tokenizer (as the ``tokenizers`` library writes
        it)."""
        return self._tok.to_str()


class _PieceBase(Tokenizer):
    """Shared by the GGUF and llama2.c tokenizers: a list of raw pieces (bytes per token)."""

    def __init__(self, raw, *, source, byte_ids, bos_id=None, eos_id=None):
        self._raw = list(raw)
        self._byte_ids = dict(byte_ids)
        self._source = str(source)
        self.bos_id = bos_id
        self.eos_id = eos_id
        super().__init__(b.decode("utf-8", errors="replace") for b in self._raw)

    def decode(self, ids):
        """Text of ``ids``: byte tokens are joined before UTF-8 decoding; one leading space is
        dropped at the start and after each BOS (the dummy prefix ``encode`` adds)."""
        ids = _check_ids(ids, self.vocab_size, self._source)
        out = bytearray()
        strip = True
        for i in ids:
            piece = self._raw[i]
            if strip and piece.startswith(b" "):
                piece = piece[1:]
            out += piece
            strip = i == self.bos_id
        return out.decode("utf-8", errors="replace")

    def _byte_id(self, b, text):
        i = self._byte_ids.get(b)
        if i is None:
            raise HardwireError(f"{self._source}: cannot encode {text!r}: byte 0x{b:02X} has no "
                                f"token and no <0x{b:02X}> byte-fallback token exists")
        return i


class PieceTokenizer(_PieceBase):
    """A GGUF ``tokenizer.ggml.tokens`` vocabulary (SentencePiece ``llama`` or byte-level ``gpt2``).

    Decoding maps ``▁`` to a space (SentencePiece) or undoes GPT-2's byte table (``gpt2``),
    turns ``<0xNN>`` tokens into bytes and renders control tokens (type 3) as nothing.
    Encoding is a documented approximation, not the model's own algorithm: a space is
    prepended (SentencePiece's dummy prefix, ``llama`` only), then the text is cut greedily into
    the longest matching normal pieces, left to right; a character with no piece falls back to
    its UTF-8 byte tokens. It yields valid ids that decode back to the text, but not always the
    same ids as llama.cpp.
    """

    def __init__(self, tokens, *, source, model="llama", token_types=None, bos_id=None,
                 eos_id=None):
        if model not in ("llama", "gpt2"):
            raise ModelFormatError(source, "unsupported tokenizer model",
                                   field="tokenizer.ggml.model", expected="llama or gpt2",
                                   found=repr(model))
        self.model = model
        types = list(token_types) if token_types is not None else [1] * len(tokens)
        if len(types) != len(tokens):
            raise ModelFormatError(source, "token type list does not match the token list",
                                   field="tokenizer.ggml.token_type",
                                   expected=f"{len(tokens)} entries", found=len(types))
        unbyte = {c: b for b, c in byte_level_table().items()}
        raw = []
        for token, kind in zip(tokens, types, strict=True):
            if kind == 3:                        # CONTROL: <s>, </s> print as nothing
                raw.append(b"")
            elif kind == 6 or (_byte_of(token) is not None and model == "llama"):
                b = _byte_of(token)
                raw.append(bytes([b]) if b is not None else token.encode("utf-8"))
            elif model == "gpt2" and all(c in unbyte for c in token):
                raw.append(bytes(unbyte[c] for c in token))
            else:
                raw.append(token.replace(SPIECE_SPACE, " ").encode("utf-8"))
        byte_ids = {}
        for i, token in enumerate(tokens):
            if _byte_of(token) is not None and types[i] != 3:
                byte_ids.setdefault(_byte_of(token), i)
        super().__init__(raw, source=source, byte_ids=byte_ids, bos_id=bos_id, eos_id=eos_id)
        # Greedy matching only over normal/user pieces, never control or byte tokens.
        self._match = {}
        for i, (b, kind) in enumerate(zip(raw, types, strict=True)):
            if kind in (1, 4) and b and _byte_of(tokens[i]) is None:
                self._match.setdefault(b, i)
        self._longest = max((len(b) for b in self._match), default=1)

    def encode(self, text):
        """Greedy longest-match token ids of ``text`` (no BOS/EOS); see the class docstring."""
        data = ((" " + text) if text and self.model == "llama" else text).encode("utf-8")
        ids, pos = [], 0
        while pos < len(data):
            for n in range(min(self._longest, len(data) - pos), 0, -1):
                i = self._match.get(data[pos:pos + n])
                if i is not None:
                    ids.append(i)
                    pos += n
                    break
            else:
                ids.append(self._byte_id(data[pos], text))
                pos += 1
        return ids

    def decode(self, ids):
        """Text of ``ids`` (see :meth:`_PieceBase.decode`); ``gpt2`` vocabularies keep spaces."""
        if self.model == "llama":
            return super().decode(ids)
        ids = _check_ids(ids, self.vocab_size, self._source)
        return b"".join(self._raw[i] for i in ids).decode("utf-8", errors="replace")


class Llama2cTokenizer(_PieceBase):
    """llama2.c's ``tokenizer.bin``: pieces with scores, BPE that merges the best-scored pair.

    ``encode`` follows ``run.c``: a dummy-prefix space (when the text is not empty), one token per
    UTF-8 character or its ``<0xNN>`` byte tokens, then repeatedly merge the adjacent pair whose
    concatenation is a piece with the highest score. BOS is id 1 and EOS id 2 (llama2.c's fixed
    convention; the file does not store them).
    """

    def __init__(self, pieces, scores, *, source, bos_id=1, eos_id=2):
        if len(pieces) != len(scores):
            raise ModelFormatError(source, "pieces and scores differ in number",
                                   expected=len(pieces), found=len(scores))
        self.scores = [float(s) for s in scores]
        raw, byte_ids = [], {}
        for i, p in enumerate(pieces):
            b = _byte_of(p.decode("latin-1")) if len(p) == 6 else None
            raw.append(bytes([b]) if b is not None else p)
            if b is not None:
                byte_ids.setdefault(b, i)
        self._pieces_raw = list(pieces)
        super().__init__(raw, source=source, byte_ids=byte_ids, bos_id=bos_id, eos_id=eos_id)
        self._exact = {}
        for i, p in enumerate(pieces):
            self._exact.setdefault(p, i)

    def encode(self, text):
        """llama2.c BPE token ids of ``text`` (no BOS/EOS)."""
        if not text:
            return []
        ids = []
        space = self._exact.get(b" ")
        if space is None:
            raise HardwireError(f"{self._source}: cannot encode: the vocabulary has no ' ' piece "
                                f"for llama2.c's dummy prefix")
        ids.append(space)
        for ch in text:
            b = ch.encode("utf-8")
            i = self._exact.get(b)
            if i is not None:
                ids.append(i)
            else:
                ids += [self._byte_id(x, text) for x in b]
        while True:
            best = None
            for k in range(len(ids) - 1):
                i = self._exact.get(self._pieces_raw[ids[k]] + self._pieces_raw[ids[k + 1]])
                if i is not None and (best is None or self.scores[i] > best[0]):
                    best = (self.scores[i], k, i)
            if best is None:
                return ids
            _, k, i = best
            ids[k:k + 2] = [i]

"""Calibration: the absolute maxima of the float reference model's activations on sample tokens.

The default sample is the model's own tokenizer over ``data/kjv-calibration.txt`` (BOS prepended
to each sequence when the model has one). When there is no tokenizer, the file is missing (an
installed wheel does not ship ``data/``) or the tokenizer cannot encode the text, the sample is a
pseudo-random token sequence from ``numpy.random.default_rng(CALIBRATION_SEED)``. Either way the
tokens are cut into at most ``MAX_SEQUENCES`` sequences of up to the context length, and the
chosen source is described in ``QuantizedModel.calibration``.
"""

from pathlib import Path

import numpy as np

from ..errors import ConfigError, HardwireError

__all__ = ["calibration_sequences", "default_calibration", "calibrate", "CALIBRATION_TEXT",
           "CALIBRATION_SEED", "MAX_SEQUENCES"]

CALIBRATION_TEXT = Path(__file__).resolve().parent.parent / "data" / "kjv-calibration.txt"
CALIBRATION_SEED = 1611
MAX_SEQUENCES = 8
RANDOM_SEQUENCES = 4


def _chunks(ids, length):
    return [ids[i:i + length] for i in range(0, len(ids), length)]


def default_calibration(loaded, length):
    """``(sequences, description)``: the default calibration token sequences of ``loaded``."""
    spec, tokenizer = loaded.spec, loaded.tokenizer
    bos = [] if spec.bos_id is None else [spec.bos_id]
    body = length - len(bos)
    ids = None
    if tokenizer is not None and CALIBRATION_TEXT.is_file() and body > 0:
        try:
            ids = [int(i) for i in tokenizer.encode(CALIBRATION_TEXT.read_text(encoding="utf-8"))]
        except (HardwireError, NotImplementedError, ValueError, KeyError, TypeError):
            ids = None
        if ids is not None and (not ids or not all(0 <= i < spec.vocab_size for i in ids)):
            ids = None
    if ids is not None:
        sequences = [np.array(bos + c, dtype=np.int64)
                     for c in _chunks(ids, body)[:MAX_SEQUENCES]]
        return sequences, (f"{CALIBRATION_TEXT.name} through the model's tokenizer: "
                           f"{len(sequences)} sequences, {sum(map(len, sequences))} tokens")
    rng = np.random.default_rng(CALIBRATION_SEED)
    sequences = [rng.integers(0, spec.vocab_size, size=length, dtype=np.int64)
                 for _ in range(RANDOM_SEQUENCES)]
    return sequences, (f"pseudo-random tokens (numpy default_rng({CALIBRATION_SEED})): "
                       f"{len(sequences)} sequences, {sum(map(len, sequences))} tokens")


def calibration_sequences(loaded, calibration, length):
    """``(sequences, description)`` from user token ids: one flat sequence or a list of them,
    each cut into pieces of at most ``length`` tokens; ``None``: :func:`default_calibration`."""
    if calibration is None:
        return default_calibration(loaded, length)
    items = list(calibration)
    if not items:
        raise ConfigError("calibration: needs at least one token id")
    flat = all(np.ndim(item) == 0 for item in items)
    sequences = []
    for item in [items] if flat else items:
        array = np.asarray(item)
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"calibration: each sequence must be a non-empty list of integer "
                              f"token ids, found an array of shape {array.shape} and dtype "
                              f"{array.dtype}")
        bad = array[(array < 0) | (array >= loaded.spec.vocab_size)]
        if bad.size:
            raise ConfigError(f"calibration: token id {int(bad[0])} is outside the vocabulary "
                              f"(expected 0..{loaded.spec.vocab_size - 1})")
        sequences += _chunks(array.astype(np.int64), length)
    return sequences, (f"given token ids: {len(sequences)} sequences, "
                       f"{sum(map(len, sequences))} tokens")


def _pair_magnitude(row, n_heads, pairing):
    v = np.asarray(row, dtype=np.float64).reshape(n_heads, -1)
    half = v.shape[1] // 2
    if pairing == "half":
        a, b = v[:, :half], v[:, half:]
    else:
        a, b = v[:, 0::2], v[:, 1::2]
    return float(np.sqrt(a * a + b * b).max())


def calibrate(loaded, sequences):
    """Run the float reference over ``sequences``; return ``{point: absmax}`` (float).

    Points are those of :func:`hardwire.sim.reference.observe_points`; for ``layers.{i}.q`` and
    ``.k`` the value is the largest RoPE pair magnitude ``sqrt(a^2 + b^2)`` instead.
    """
    from ..sim.reference import FloatModel
    spec = loaded.spec
    model = FloatModel(loaded)
    absmax = {}

    def observe(name, row):
        if name.endswith(".q"):
            value = _pair_magnitude(row, spec.n_heads, spec.rope_pairing)
        elif name.endswith(".k"):
            value = _pair_magnitude(row, spec.n_kv_heads, spec.rope_pairing)
        else:
            value = float(np.abs(row).max())
        if not np.isfinite(value):
            value = float("inf")           # the quantizer refuses it, naming the point
        if value > absmax.get(name, 0.0):
            absmax[name] = value
        else:
            absmax.setdefault(name, 0.0)

    for sequence in sequences:
        model.logits_for(sequence, observe=observe)
    return absmax

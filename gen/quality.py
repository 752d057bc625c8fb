"""Quality measures of an integer model against its float reference: cross-entropy and agreement.

Teacher-forced: both models read the same tokens; the prediction at position ``t`` is scored on
token ``t + 1``. Token streams longer than the context are cut into windows, each a new sequence.
"""

import numpy as np

from ..errors import HardwireError

__all__ = ["cross_entropy", "evaluate"]


def cross_entropy(logits_rows, targets):
    """Mean ``-log softmax(logits)[target]`` in nats per token (float64 throughout)."""
    logits = np.asarray(logits_rows, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.ndim != 2 or targets.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise ValueError(f"need logits [n, vocab] and n targets with n > 0, found "
                         f"{logits.shape} and {targets.shape}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_z - shifted[np.arange(len(targets)), targets]))


def evaluate(loaded, qm, token_ids):
    """Score ``loaded`` (float) and, unless ``qm`` is ``None``, its quantized form on ``token_ids``.

    Returns ``{"tokens", "float_cross_entropy", "int_cross_entropy", "top1_agreement"}``: the
    number of predictions scored, both cross-entropies in nats/token (integer logits times
    ``qm.s_logit``), and the fraction of positions where the integer and float argmax agree
    (``None`` for the integer entries when ``qm`` is ``None``).
    """
    from ..sim.golden import GoldenModel
    from ..sim.reference import FloatModel
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) < 2:
        raise HardwireError(f"evaluation needs at least 2 token ids, found {ids.size}")
    window = loaded.spec.max_seq_len if qm is None else min(loaded.spec.max_seq_len, qm.context)
    float_model = FloatModel(loaded)
    golden = None if qm is None else GoldenModel(qm)
    float_rows, int_rows, targets = [], [], []
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window + 1]
        inputs = chunk[:-1]
        float_rows.append(float_model.logits_for(inputs))
        if golden is not None:
            int_rows.append(golden.logits_for(inputs).astype(np.float64) * qm.s_logit)
        targets.append(chunk[1:])
    float_logits, targets = np.concatenate(float_rows), np.concatenate(targets)
    result = {"tokens": int(len(targets)),
              "float_cross_entropy": cross_entropy(float_logits, targets),
              "int_cross_entropy": None, "top1_agreement": None}
    if golden is not None:
        int_logits = np.concatenate(int_rows)
        result["int_cross_entropy"] = cross_entropy(int_logits, targets)
        # The integer argmax follows docs/numerics.md: the lowest index wins ties.
        agree = np.argmax(int_logits, axis=1) == np.argmax(float_logits, axis=1)
        result["top1_agreement"] = float(agree.mean())
    return result


def compare_formats(loaded, token_ids, formats, *, context=None, progress=None):
    """:func:`evaluate` for each ``(weights, group_size)`` of ``formats``: one row per format
    with ``delta_nats`` (integer minus float cross-entropy). ``progress(weights)`` is called
    before each."""
    from .quantize import quantize
    rows = []
    for weights, group_size in formats:
        if progress:
            progress(weights)
        qm = quantize(loaded, weights=weights, group_size=group_size, context=context)
        result = evaluate(loaded, qm, token_ids)
        rows.append({"weights": weights, "group_size": group_size, **result,
                     "delta_nats": result["int_cross_entropy"] - result["float_cross_entropy"]})
    return rows

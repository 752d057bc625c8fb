import math

import numpy as np
import pytest
from quant_helpers import random_loaded

from hardwire.errors import HardwireError
from hardwire.gen.quality import cross_entropy, evaluate
from hardwire.gen.quantize import quantize
from hardwire.sim.golden import GoldenModel
from hardwire.sim.reference import FloatModel


def test_cross_entropy_values():
    assert cross_entropy(np.zeros((3, 8)), [0, 5, 7]) == pytest.approx(math.log(8))
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 50.0]])
    expected = np.mean([-(2 - np.log(np.exp(2) + 1 + np.exp(-1))),
                        -(0 - np.log(2 + np.exp(50)))])
    assert cross_entropy(logits, [0, 1]) == pytest.approx(expected)
    # large logits do not overflow
    assert cross_entropy([[1e4, 0.0]], [0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="need logits"):
        cross_entropy(np.zeros((2, 3)), [1])


@pytest.fixture(scope="module")
def loaded():
    return random_loaded(6)


def test_evaluate_float_and_integer(loaded):
    qm = quantize(loaded)
    ids = np.random.default_rng(0).integers(0, loaded.spec.vocab_size, 30)
    result = evaluate(loaded, qm, ids)
    assert result["tokens"] == 29
    floats = FloatModel(loaded).logits_for(ids[:24])
    ints = GoldenModel(qm).logits_for(ids[:24]) * qm.s_logit
    # 30 tokens through a 24-token context: one window of 24 predictions, one of 5
    floats2 = FloatModel(loaded).logits_for(ids[24:29])
    ints2 = GoldenModel(qm).logits_for(ids[24:29]) * qm.s_logit
    targets = ids[1:]
    assert result["float_cross_entropy"] == pytest.approx(
        cross_entropy(np.concatenate([floats, floats2]), targets))
    assert result["int_cross_entropy"] == pytest.approx(
        cross_entropy(np.concatenate([ints, ints2]), targets))
    agree = np.concatenate([ints.argmax(1) == floats.argmax(1),
                            ints2.argmax(1) == floats2.argmax(1)])
    assert result["top1_agreement"] == pytest.approx(agree.mean())
    assert result["top1_agreement"] >= 0.8
    assert abs(result["int_cross_entropy"] - result["float_cross_entropy"]) \
        < 0.1 * result["float_cross_entropy"]


def test_evaluate_quality_orders_formats(loaded):
    """Coarser weights cost more agreement with the float model than int8 does."""
    ids = np.random.default_rng(1).integers(0, loaded.spec.vocab_size, 48)
    int8 = evaluate(loaded, quantize(loaded), ids)
    ternary = evaluate(loaded, quantize(loaded, weights="ternary"), ids)
    gap = lambda r: abs(r["int_cross_entropy"] - r["float_cross_entropy"])   # noqa: E731
    assert gap(int8) < gap(ternary)
    assert int8["top1_agreement"] > ternary["top1_agreement"]


def test_evaluate_float_only(loaded):
    result = evaluate(loaded, None, [1, 2, 3, 4])
    assert result["tokens"] == 3 and result["int_cross_entropy"] is None
    assert result["top1_agreement"] is None and result["float_cross_entropy"] > 0
    with pytest.raises(HardwireError, match="at least 2 token ids"):
        evaluate(loaded, None, [1])

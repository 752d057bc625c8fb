"""Issue #5's acceptance sweep on the bundled micro model: every weight format at several lane
counts, three prompts, 32 new tokens each, through ``hardwire verify`` (compile, Verilator build,
cocotb bench, token-exact and cycle-exact comparison with the golden model).

The same sweep over the default ``kjv`` model runs in ``make sim`` (marker ``slow``): each kjv
build takes minutes.
"""

import pytest

from hardwire.cli import main

PROMPTS = ("In the beginning", "And God said", "Jesus wept")
N_NEW = 32


def verify(model, weights, lanes, tmp_path, cache, extra=()):
    argv = ["verify", model, "--weights", weights, "--lanes", str(lanes), "-n", str(N_NEW),
            "--build-dir", str(tmp_path), "--cache", str(cache), *extra]
    for prompt in PROMPTS:
        argv += ["--prompt", prompt]
    return main(argv)


# (int8, 8) is the design tests/sim/test_decoder_verilator.py builds: shared through the cache.
@pytest.mark.parametrize(("weights", "lanes"), [("int8", 8), ("int4", 4), ("ternary", 16)])
def test_kjv_micro(weights, lanes, verilator_cache, tmp_path, capsys):
    assert verify("kjv-micro", weights, lanes, tmp_path, verilator_cache) == 0
    assert f"3 prompt(s), {3 * N_NEW} tokens equal the golden model" in capsys.readouterr().out


# The iCEBreaker design: kjv-micro, int8, on the serial engine, the weights streamed into RAM
# after reset as the board's flash loader does.
def test_kjv_micro_serial(verilator_cache, tmp_path, capsys):
    assert verify("kjv-micro", "int8", 1, tmp_path, verilator_cache,
                  extra=("--engine", "serial", "--weight-store", "flash")) == 0
    captured = capsys.readouterr()
    assert f"3 prompt(s), {3 * N_NEW} tokens equal the golden model" in captured.out
    assert "weights streamed in" in captured.err          # the table's title


@pytest.mark.slow
@pytest.mark.parametrize(("weights", "lanes"), [("int8", 16), ("int8", 4), ("int4", 16),
                                                ("ternary", 32)])
def test_kjv(weights, lanes, verilator_cache, tmp_path, capsys):
    assert verify("kjv", weights, lanes, tmp_path, verilator_cache) == 0
    assert f"3 prompt(s), {3 * N_NEW} tokens equal the golden model" in capsys.readouterr().out

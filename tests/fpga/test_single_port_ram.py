"""The serial engine's one-port RAM as the iCE40 build elaborates it — SB_SPRAM256KA tiles side
by side, simulated with yosys's model of the primitive — and as a Memory elsewhere: the same
words come back from every tile."""

import random

import pytest
from board_helpers import ICE40, spram_model

from hardwire.hdl.serial.single_port_ram import SPRAM_WORDS, SinglePortRAM
from hardwire.sim.verilator import build_verilator, run_bench, verilog_text


@pytest.mark.parametrize("ice40", [True, False])
def test_words_come_back_from_every_tile(ice40, verilator_cache, tmp_path):
    depth = 2 * SPRAM_WORDS + 100                   # three tiles, the last one partly used
    ram = SinglePortRAM(depth)
    assert ram.tiles == 3
    rng = random.Random(5)
    addresses = [0, 1, SPRAM_WORDS - 1, SPRAM_WORDS, SPRAM_WORDS + 7, 2 * SPRAM_WORDS,
                 depth - 1, *rng.sample(range(depth), 40)]
    # The same low 14 bits in each tile: a tile select that failed would overwrite its twin.
    addresses += [a + k * SPRAM_WORDS for a in (3, 77) for k in range(3)]
    addresses = list(dict.fromkeys(addresses))
    words = {a: rng.randrange(1 << 16) for a in addresses}
    if ice40:
        text = verilog_text(ram, name="single_port_ram", platform=ICE40())
        assert text.count("SB_SPRAM256KA ") == 3
        text += spram_model()
    else:
        text = verilog_text(ram, name="single_port_ram")
        assert "SB_SPRAM256KA" not in text
    built = build_verilator(text, toplevel="single_port_ram", cache_dir=verilator_cache)
    reads = list(reversed(addresses))
    result = run_bench(built, module="hardwire.sim.bench_single_port_ram", work_dir=tmp_path,
                       params={"writes": [[a, w] for a, w in words.items()], "reads": reads})
    assert result["read"] == [words[a] for a in reads]

# amaranth: UnusedElaboratable=no
"""The compiled decoder (``hardwire_top.v``) on Verilator, token-exact against the golden model.

The builds are the cost (kjv-micro with inline ROMs: ~1 min); the int8 design is built once and
shared with the CLI test through the session's Verilator cache.
"""

import pytest
from quant_helpers import random_loaded

from hardwire.cli import main
from hardwire.gen.compile import TOP, CompileOptions
from hardwire.gen.frontends import load_model
from hardwire.gen.quantize import quantize
from hardwire.sim.decoder_run import build_design, generate
from hardwire.sim.golden import GoldenModel

LANES = 8
N_NEW = 16
PROMPTS = ([1, 2, 3], [40, 50])
TINY = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=32, vocab_size=19,
            max_seq_len=24)


@pytest.fixture(scope="module")
def micro():
    return load_model("kjv-micro")


def simulate(qm, options, cache, work, prompts, n_new):
    design = build_design(qm, options, work / "rtl", cache)
    return design.decoder, generate(design, prompts, n_new, work / "run").sequences


def check(qm, decoder, prompts, sequences, n_new):
    golden = GoldenModel(qm)
    for prompt, seq in zip(prompts, sequences, strict=True):
        assert seq["tokens"] == golden.generate(prompt, n_new), prompt
        assert len(seq["tokens"]) == n_new
        cycles = seq["cycles"]
        gaps = [b - a for a, b in zip(cycles, cycles[1:], strict=False)]
        assert gaps == [decoder.cycles_per_token(len(prompt) + k) for k in range(n_new - 1)]
        prompt_gaps = [b - a for a, b in zip(seq["prompt_cycles"], seq["prompt_cycles"][1:],
                                             strict=False)]
        assert prompt_gaps == [decoder.cycles_per_prompt_token(k)
                               for k in range(len(prompt) - 1)]
        assert not (seq["busy"] or seq["error"] or seq["context_full"])


def test_kjv_micro_int8(micro, verilator_cache, tmp_path):
    qm = quantize(micro, weights="int8")
    decoder, sequences = simulate(qm, CompileOptions(lanes=LANES), verilator_cache, tmp_path,
                                  PROMPTS, N_NEW)
    check(qm, decoder, PROMPTS, sequences, N_NEW)


def test_tiny_int4_groups(verilator_cache, tmp_path):
    qm = quantize(random_loaded(7, **TINY), weights="int4", group_size=8)
    prompts = ([3, 7, 1], [11])
    decoder, sequences = simulate(qm, CompileOptions(weights="int4", group_size=8, lanes=4),
                                  verilator_cache, tmp_path, prompts, N_NEW)
    check(qm, decoder, prompts, sequences, N_NEW)


def test_tiny_mac_array_of_three_rows(verilator_cache, tmp_path):
    # --matrix-rows 3: every product works on 3 rows at once, so the 32 qkv rows and the 19
    # head rows end in groups filled up with zero rows; with int4 scale groups.
    qm = quantize(random_loaded(7, **TINY), weights="int4", group_size=8)
    prompts = ([3, 7, 1], [11])
    options = CompileOptions(weights="int4", group_size=8, lanes=4, matrix_rows=3)
    decoder, sequences = simulate(qm, options, verilator_cache, tmp_path, prompts, N_NEW)
    assert decoder.matrices.rows_per_cycle == 3 and decoder.matrices.bank_rows[-1] == 19
    check(qm, decoder, prompts, sequences, N_NEW)


def test_tiny_int4_groups_rom_files(verilator_cache, tmp_path):
    # The same design as test_tiny_int4_groups with its memories read from $readmemb files
    # that the bench's working directory receives from the build.
    qm = quantize(random_loaded(7, **TINY), weights="int4", group_size=8)
    prompts = ([3, 7, 1], [11])
    options = CompileOptions(weights="int4", group_size=8, lanes=4, rom_style="files")
    decoder, sequences = simulate(qm, options, verilator_cache, tmp_path, prompts, N_NEW)
    check(qm, decoder, prompts, sequences, N_NEW)
    assert "$readmemb" in (tmp_path / "rtl" / f"{TOP}.v").read_text()
    assert sorted(p.name for p in (tmp_path / "run").glob("*.mem")) == sorted(
        p.name for p in (tmp_path / "rtl").glob("*.mem"))


def test_cli_verify(verilator_cache, tmp_path, capsys):
    # Same model and lanes as test_kjv_micro_int8: the build comes from the shared cache.
    assert main(["verify", "kjv-micro", "--lanes", str(LANES), "--tokens", "1,2,3",
                 "--prompt", "And God", "-n", str(N_NEW), "--build-dir", str(tmp_path),
                 "--cache", str(verilator_cache)]) == 0
    assert "2 prompt(s), 32 tokens equal the golden model" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(("weights", "group_size"), [("int4", 16), ("ternary", None)])
def test_kjv_micro_formats(micro, weights, group_size, verilator_cache, tmp_path):
    qm = quantize(micro, weights=weights, group_size=group_size)
    decoder, sequences = simulate(qm, CompileOptions(weights=weights, group_size=group_size,
                                                     lanes=LANES),
                                  verilator_cache, tmp_path, PROMPTS, N_NEW)
    check(qm, decoder, PROMPTS, sequences, N_NEW)


def test_cli_verify_reports_a_mismatch(verilator_cache, tmp_path, capsys, monkeypatch):
    # A golden model that disagrees at new token 5: the cached design must be caught.
    real = GoldenModel.generate

    def off_by_one(self, prompt, n_new, **kw):
        out = real(self, prompt, n_new, **kw)
        out[5] = (out[5] + 1) % self.qm.spec.vocab_size
        return out

    monkeypatch.setattr(GoldenModel, "generate", off_by_one)
    assert main(["verify", "kjv-micro", "--lanes", str(LANES), "--tokens", "1,2,3",
                 "-n", str(N_NEW), "--build-dir", str(tmp_path),
                 "--cache", str(verilator_cache)]) == 1
    assert "first difference at new token 5" in " ".join(capsys.readouterr().err.split())


def test_odd_shapes_through_huggingface_and_gguf(verilator_cache, tmp_path):
    """Hidden 48, 3 heads sharing 1 KV head, vocab 61, context 37, via both file front ends; the
    GGUF copy stores w2 (96 inputs) as Q4_0 blocks, kept as they are (negative block scales)."""
    from model_factory import tiny_hf_model, write_gguf
    hf_dir, torch_model = tiny_hf_model(tmp_path / "hf", dim=48, n_layers=1, n_heads=3,
                                        n_kv_heads=1, ffn_dim=96, vocab=61, ctx=37, seed=5)
    write_gguf(tmp_path / "m.gguf", torch_model, qtype="Q4_0")
    prompts = ([5, 9, 14, 2], [33])
    for name, path, weights in [("hf", hf_dir, "int8"), ("gguf", tmp_path / "m.gguf", "keep")]:
        loaded = load_model(path)
        qm = quantize(loaded, weights=weights)
        if name == "gguf":
            assert qm.layers[0].w2.source_format == "Q4_0"
        decoder, sequences = simulate(qm, CompileOptions(weights=weights, lanes=6),
                                      verilator_cache, tmp_path / name, prompts, N_NEW)
        check(qm, decoder, prompts, sequences, N_NEW)

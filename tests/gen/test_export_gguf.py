import gguf
import numpy as np
import pytest

from hardwire.errors import ConfigError
from hardwire.gen import export_gguf as export
from hardwire.gen.export_gguf import export_gguf
from hardwire.gen.frontends import load_model
from hardwire.gen.frontends.gguf_reader import gguf_tensor_name
from hardwire.gen.model import LoadedModel, Tokenizer, tensor_names
from hardwire.sim.reference import FloatModel

PROMPTS = ("In the beginning", "Jesus wept")


@pytest.fixture(scope="module", params=["kjv-micro", "kjv"])
def bundled(request):
    return load_model(request.param)


def _fields(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {k: f.contents() for k, f in reader.fields.items()
                    if not k.startswith("GGUF.")}


def test_f32_export_reads_back_exactly(bundled, tmp_path):
    path = export_gguf(bundled, tmp_path / "m.gguf")
    back = load_model(path)
    assert back.weights.keys() == bundled.weights.keys()
    for name, w in bundled.weights.items():
        assert np.array_equal(back.weights[name], w), name
    want = dict(bundled.spec.to_dict(), name=back.spec.name,
                norm_eps=float(np.float32(bundled.spec.norm_eps)))
    assert back.spec.to_dict() == want
    for text in PROMPTS:
        prompt = bundled.tokenizer.encode(text)
        n = min(32, bundled.spec.max_seq_len - len(prompt) + 1)
        assert FloatModel(back).generate(prompt, n) == FloatModel(bundled).generate(prompt, n)


def test_export_is_byte_identical(bundled, tmp_path):
    for dtype in ("F32", "F16"):
        a, b = tmp_path / f"a{dtype}.gguf", tmp_path / f"b{dtype}.gguf"
        export_gguf(bundled, a, dtype=dtype)
        export_gguf(bundled, b, dtype=dtype)
        assert a.read_bytes() == b.read_bytes()


def test_metadata_llama_cpp_reads(bundled, tmp_path):
    spec = bundled.spec
    reader, meta = _fields(export_gguf(bundled, tmp_path / "m.gguf"))
    assert meta["general.architecture"] == "llama"
    assert meta["llama.context_length"] == spec.max_seq_len
    assert meta["llama.embedding_length"] == spec.dim
    assert meta["llama.block_count"] == spec.n_layers
    assert meta["llama.feed_forward_length"] == spec.ffn_dim
    assert meta["llama.attention.head_count"] == spec.n_heads
    assert meta["llama.attention.head_count_kv"] == spec.n_kv_heads
    assert meta["llama.rope.dimension_count"] == spec.head_dim
    assert meta["llama.vocab_size"] == spec.vocab_size
    assert meta["llama.rope.freq_base"] == np.float32(spec.rope_theta)
    assert meta["llama.attention.layer_norm_rms_epsilon"] == np.float32(spec.norm_eps)
    assert meta["tokenizer.ggml.model"] == "llama"
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == len(set(tokens)) == spec.vocab_size
    assert len(meta["tokenizer.ggml.scores"]) == len(meta["tokenizer.ggml.token_type"]) \
        == spec.vocab_size
    # The bundled models have no BOS/EOS: none is written and none is added to prompts.
    assert "tokenizer.ggml.bos_token_id" not in meta and meta["tokenizer.ggml.add_bos_token"] \
        is False
    names = [t.name for t in reader.tensors]
    assert names == [gguf_tensor_name(n) for n in tensor_names(spec)]


def test_f16_rounds_matrices_only(bundled, tmp_path):
    path = export_gguf(bundled, tmp_path / "m.gguf", dtype="F16")
    reader, meta = _fields(path)
    assert meta["general.file_type"] == 1
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    back = load_model(path)
    for name, w in bundled.weights.items():
        assert types[gguf_tensor_name(name)] == ("F16" if w.ndim == 2 else "F32")
        want = w.astype(np.float16).astype(np.float32) if w.ndim == 2 else w
        assert np.array_equal(back.weights[name], want), name


def test_q_k_rows_permuted_for_interleaved_rope(bundled, tmp_path):
    reader, _ = _fields(export_gguf(bundled, tmp_path / "m.gguf"))
    stored = {t.name: np.asarray(t.data) for t in reader.tensors}
    spec = bundled.spec
    wk = bundled.weights["layers.0.wk"]
    gk = stored["blk.0.attn_k.weight"]
    half = spec.head_dim // 2
    # Row 2i of head 0 in the file is row i of head 0 in half pairing, row 2i+1 is row i + half.
    assert np.array_equal(gk[0::2][:half], wk[:half])
    assert np.array_equal(gk[1::2][:half], wk[half:spec.head_dim])


def test_interleaved_model_exports_equivalently(tmp_path):
    half_model = load_model("kjv-micro")
    export_gguf(half_model, tmp_path / "half.gguf")
    reader, _ = _fields(tmp_path / "half.gguf")
    stored = {t.name: np.asarray(t.data) for t in reader.tensors}
    weights = dict(half_model.weights)
    for i in range(half_model.spec.n_layers):
        for kind, gname in (("wq", "attn_q"), ("wk", "attn_k")):
            weights[f"layers.{i}.{kind}"] = stored[f"blk.{i}.{gname}.weight"].copy()
    spec = half_model.spec.__class__(**dict(half_model.spec.to_dict(), rope_pairing="interleaved"))
    inter = LoadedModel(spec=spec, weights=weights, tokenizer=half_model.tokenizer,
                        source="interleaved", format="test")
    export_gguf(inter, tmp_path / "inter.gguf")
    assert (tmp_path / "inter.gguf").read_bytes() == (tmp_path / "half.gguf").read_bytes()


def test_vocab_pieces():
    spec = load_model("kjv-micro").spec
    spec = spec.__class__(**dict(spec.to_dict(), vocab_size=6, bos_id=4, eos_id=5))
    tokens, types = export.vocab_pieces(Tokenizer(["\n", " ", "a b", "\n", "<s>"]), spec)
    assert tokens == ["<0x0A>", "\u2581", "a\u2581b", "<0x0A><dup_3>", "<s>", "<unused_5>"]
    assert types == [export.TOKEN_BYTE, export.TOKEN_NORMAL, export.TOKEN_NORMAL,
                     export.TOKEN_BYTE, export.TOKEN_CONTROL, export.TOKEN_CONTROL]


def test_bad_dtype(tmp_path):
    with pytest.raises(ConfigError, match="Q4_0"):
        export_gguf(load_model("kjv-micro"), tmp_path / "m.gguf", dtype="Q4_0")

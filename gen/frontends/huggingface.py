"""Hugging Face model directories: ``config.json`` + safetensors weights + ``tokenizer.json``.

Only Llama (``LlamaForCausalLM`` / ``model_type: llama``) without biases or RoPE scaling maps onto
our decoder; everything else is refused with the field that differs. Weights are read from
``model.safetensors`` or the shards named by ``model.safetensors.index.json``, never from pickle.
"""

import contextlib
import json
import math
import os
from pathlib import Path

from ...errors import ModelFormatError
from ..model import MAX_DIMENSION, LoadedModel, ModelSpec, first_missing, tensor_names
from ..tokenizer import HFTokenizer
from .safetensors_file import read_safetensors, read_safetensors_header

__all__ = ["load_huggingface", "read_hf_config", "hf_tensor_name"]

_LAYER_MAP = {
    "attn_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight", "ffn_norm": "post_attention_layernorm.weight",
    "w1": "mlp.gate_proj.weight", "w3": "mlp.up_proj.weight", "w2": "mlp.down_proj.weight",
}


def hf_tensor_name(name):
    """The Hugging Face tensor name of canonical tensor ``name``."""
    if name == "embed":
        return "model.embed_tokens.weight"
    if name == "norm":
        return "model.norm.weight"
    if name == "head":
        return "lm_head.weight"
    _, index, kind = name.split(".")
    return f"model.layers.{index}.{_LAYER_MAP[kind]}"


def _int(config, key, path, *, default=None):
    value = config.get(key)
    if value is None:   # absent or null: transformers' default, where it has one
        if default is None:
            raise ModelFormatError(path, "required field missing", field=key,
                                   expected="a positive integer", found="nothing")
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DIMENSION:
        raise ModelFormatError(path, "must be a positive integer", field=key,
                               expected=f"an integer in 1..{MAX_DIMENSION}", found=repr(value))
    return value


def _float(value, key, path):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise ModelFormatError(path, "must be a positive finite number", field=key,
                               expected="a number > 0", found=repr(value))
    return float(value)


def _token_id(config, key, path):
    """``bos_token_id``/``eos_token_id``; a list (several EOS tokens) yields its first entry."""
    value = config.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFormatError(path, "must be a token id", field=key, expected="an integer",
                               found=repr(value))
    return value


def read_hf_config(path, *, name=None):
    """Turn ``config.json`` at ``path`` into a :class:`ModelSpec` (``rope_pairing="half"``).

    Accepts transformers 4.x (top-level ``rope_theta``, ``rope_scaling``) and 5.x
    (``rope_parameters: {rope_theta, rope_type}``). ``eos_token_id`` may be a list (models with
    several end tokens): the first entry becomes ``eos_id``.
    """
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelFormatError(path, f"cannot read the file: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(path, f"not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelFormatError(path, "must hold a JSON object", expected="an object",
                               found=type(config).__name__)

    archs = config.get("architectures") or []
    model_type = config.get("model_type")
    if model_type != "llama" and "LlamaForCausalLM" not in archs:
        raise ModelFormatError(path, "unsupported architecture", field="model_type",
                               expected="llama (LlamaForCausalLM)",
                               found=f"{model_type!r} {archs!r}")
    if archs and archs != ["LlamaForCausalLM"]:
        raise ModelFormatError(path, "unsupported architecture", field="architectures",
                               expected="['LlamaForCausalLM']", found=repr(archs))
    if config.get("quantization_config") is not None:
        method = config["quantization_config"].get("quant_method", "?") \
            if isinstance(config["quantization_config"], dict) else "?"
        raise ModelFormatError(path, "pre-quantized Hugging Face checkpoints are not supported; "
                               "use the float model (hardwire quantizes it) or a GGUF file",
                               field="quantization_config", expected="absent", found=method)
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ModelFormatError(path, "only the SwiGLU (silu) MLP is supported",
                               field="hidden_act", expected="silu", found=repr(act))
    for key in ("attention_bias", "mlp_bias", "tie_word_embeddings"):
        if not isinstance(config.get(key, False), bool):
            raise ModelFormatError(path, "must be true or false", field=key,
                                   expected="a JSON boolean", found=repr(config[key])[:80])
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key, False):
            raise ModelFormatError(path, "biases are not supported", field=key,
                                   expected="false", found=repr(config[key]))
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        raise ModelFormatError(path, "partial RoPE is not supported",
                               field="partial_rotary_factor", expected="1.0",
                               found=repr(config["partial_rotary_factor"]))

    rope = config.get("rope_parameters")
    if rope is not None:
        if not isinstance(rope, dict):
            raise ModelFormatError(path, "must be an object", field="rope_parameters",
                                   expected="{rope_theta, rope_type}", found=repr(rope)[:80])
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
        rope_field, theta_field = "rope_parameters.rope_type", "rope_parameters.rope_theta"
    else:
        scaling = config.get("rope_scaling")
        if scaling is not None and not isinstance(scaling, dict):
            raise ModelFormatError(path, "must be an object or null", field="rope_scaling",
                                   expected="null", found=repr(scaling)[:80])
        rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
        theta = config.get("rope_theta", 10000.0)
        rope_field, theta_field = "rope_scaling.rope_type", "rope_theta"
    if rope_type != "default":
        raise ModelFormatError(path, "RoPE scaling is not supported", field=rope_field,
                               expected="'default'", found=repr(rope_type))
    theta = _float(theta, theta_field, path)

    dim = _int(config, "hidden_size", path)
    n_heads = _int(config, "num_attention_heads", path)
    n_kv = _int(config, "num_key_value_heads", path, default=n_heads)
    if config.get("head_dim") is not None:
        head_dim = _int(config, "head_dim", path)
    elif dim % n_heads:
        raise ModelFormatError(path, "hidden_size is not a multiple of num_attention_heads and "
                               "no head_dim is given", field="head_dim",
                               expected=f"a divisor of {dim}", found=n_heads)
    else:
        head_dim = dim // n_heads
    eps = _float(config.get("rms_norm_eps", 1e-6), "rms_norm_eps", path)
    try:
        return ModelSpec(
            name=name or path.parent.name, dim=dim,
            n_layers=_int(config, "num_hidden_layers", path), n_heads=n_heads, n_kv_heads=n_kv,
            head_dim=head_dim, ffn_dim=_int(config, "intermediate_size", path),
            vocab_size=_int(config, "vocab_size", path),
            max_seq_len=_int(config, "max_position_embeddings", path, default=2048),
            rope_theta=theta, norm_eps=eps,
            tied_embeddings=bool(config.get("tie_word_embeddings", False)), rope_pairing="half",
            bos_id=_token_id(config, "bos_token_id", path),
            eos_id=_token_id(config, "eos_token_id", path))
    except ModelFormatError as e:   # ModelSpec names the model, not the file: re-aim it
        raise ModelFormatError(path, e.problem, field=_CONFIG_KEYS.get(e.field, e.field),
                               expected=e.expected, found=e.found) from None


_CONFIG_KEYS = {"n_kv_heads": "num_key_value_heads", "head_dim": "head_dim",
                "bos_id": "bos_token_id", "eos_id": "eos_token_id"}


def _weight_files(directory):
    """``{tensor name: safetensors file}`` for the directory, from one file or the shard index."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return {name: single for name in read_safetensors_header(single)}
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ModelFormatError(index, f"unreadable shard index ({type(e).__name__}: {e})",
                                   field="weight_map") from None
        if not isinstance(weight_map, dict):
            raise ModelFormatError(index, "must map tensor names to file names",
                                   field="weight_map", expected="an object",
                                   found=type(weight_map).__name__)
        files, shards = {}, {}
        for tensor, shard in weight_map.items():
            if not isinstance(shard, str) or os.path.basename(shard) != shard \
                    or shard in ("", ".", "..") or not shard.endswith(".safetensors"):
                raise ModelFormatError(index, "shard must be a .safetensors file name in the "
                                       "same directory", field=tensor,
                                       expected="NAME.safetensors", found=repr(shard))
            if shard not in shards:
                if not (directory / shard).is_file():
                    raise ModelFormatError(index, "shard file missing", field=tensor,
                                           expected=str(directory / shard), found="nothing")
                shards[shard] = set(read_safetensors_header(directory / shard))
            if tensor not in shards[shard]:
                raise ModelFormatError(directory / shard, "tensor listed in the index is absent",
                                       field=tensor, expected="present", found="nothing")
            files[tensor] = directory / shard
        return files
    pickles = sorted(p.name for p in directory.glob("pytorch_model*.bin"))
    if pickles:
        raise ModelFormatError(directory / pickles[0], "PyTorch pickle checkpoints are refused "
                               "(loading them can run code); convert to safetensors, e.g. "
                               "`LlamaForCausalLM.from_pretrained(dir).save_pretrained(out, "
                               "safe_serialization=True)`", field="weights",
                               expected="model.safetensors", found=pickles[0])
    raise ModelFormatError(directory, "no weights found", field="weights",
                           expected="model.safetensors or model.safetensors.index.json",
                           found=", ".join(sorted(p.name for p in directory.iterdir())) or "empty")


def load_huggingface(directory, *, name=None):
    """Load a Hugging Face Llama directory as a float32 :class:`LoadedModel`.

    Tensors are mapped onto canonical names (``gate_proj`` -> ``w1``, ``up_proj`` -> ``w3``,
    ``down_proj`` -> ``w2``); any other tensor (a bias, a rotary buffer) is refused by name. With
    tied embeddings an ``lm_head.weight`` equal to the embedding is accepted and dropped.
    """
    directory = Path(directory)
    spec = read_hf_config(directory / "config.json", name=name)
    files = _weight_files(directory)
    missing = first_missing(spec, lambda n: hf_tensor_name(n) in files)
    if missing is not None:   # before anything per tensor: num_hidden_layers may be absurd
        raise ModelFormatError(directory, "tensor missing", field=hf_tensor_name(missing),
                               expected="present", found="nothing")
    wanted = {hf_tensor_name(n): n for n in tensor_names(spec)}
    extra_head = spec.tied_embeddings and "lm_head.weight" in files
    for hf_name, file in sorted(files.items()):
        if hf_name not in wanted and not (extra_head and hf_name == "lm_head.weight"):
            raise ModelFormatError(file, "tensor does not belong to a Llama decoder hardwire "
                                   "can map", field=hf_name, expected="only Llama weights "
                                   "without biases", found=hf_name)
    by_file = {}
    for hf_name in [*wanted, *(["lm_head.weight"] if extra_head else [])]:
        by_file.setdefault(files[hf_name], []).append(hf_name)
    arrays = {}
    for file, names in by_file.items():
        arrays.update(read_safetensors(file, names))
    weights = {wanted[n]: arrays[n] for n in wanted}
    if extra_head:
        head, embed = arrays["lm_head.weight"], weights["embed"]
        if head.shape != embed.shape or not (head == embed).all():
            raise ModelFormatError(files["lm_head.weight"], "tie_word_embeddings is true but "
                                   "lm_head differs from the embedding", field="lm_head.weight",
                                   expected="equal to model.embed_tokens.weight",
                                   found="different")
    tok_path = directory / "tokenizer.json"
    tokenizer = HFTokenizer(tok_path) if tok_path.is_file() else None
    if tokenizer is not None and tokenizer.vocab_size > spec.vocab_size:
        raise ModelFormatError(tok_path, "tokenizer has more tokens than the model",
                               field="vocab", expected=f"at most {spec.vocab_size}",
                               found=tokenizer.vocab_size)
    try:
        return LoadedModel(spec=spec, weights=weights, tokenizer=tokenizer,
                           source=str(directory), format="huggingface")
    except ModelFormatError as e:
        raise _with_hf_name(e) from None


def _with_hf_name(error):
    """Say the file's own tensor name (``model.layers.0.mlp.up_proj.weight``) beside ours."""
    field = error.field
    with contextlib.suppress(ValueError, KeyError, AttributeError):
        field = f"{hf_tensor_name(field)} ({field})"
    return ModelFormatError(error.path, error.problem, field=field, expected=error.expected,
                            found=error.found)

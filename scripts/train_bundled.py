"""Train one of hardwire's bundled char-level Llama models on the King James Bible.

    python scripts/train_bundled.py --preset kjv --out models/kjv
    python scripts/train_bundled.py --preset kjv-micro --out models/kjv-micro

The result is a standard Hugging Face model directory (``config.json``, float32
``model.safetensors``, ``tokenizer.json`` + ``tokenizer_config.json``) and a ``README.md`` with the
losses and sample output. Training is deterministic: fixed seeds, a fixed number of steps, a fixed
thread count and ``torch.use_deterministic_algorithms(True)``; on one machine and one torch build,
two runs write identical bytes (other CPUs may round differently). Nothing in the output depends
on the clock; the wall time is printed, not saved.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # a sibling script, not a package

__all__ = ["Preset", "PRESETS", "build_tokenizer", "train"]

SEED = 1611  # the year the Authorized Version was printed
PROMPTS = ("In the beginning", "And the LORD said", "Blessed are the")


@dataclass(frozen=True)
class Preset:
    """Architecture and schedule of one bundled model."""
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    context: int
    tied: bool
    steps: int
    batch: int
    lr: float
    warmup: int
    note: str


PRESETS = {
    "kjv": Preset(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=192, context=128, tied=False,
                  steps=2000, batch=32, lr=3e-3, warmup=50,
                  note="the default model of `make verilog` / `make sim`"),
    "kjv-micro": Preset(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64, context=64,
                        tied=True, steps=1500, batch=64, lr=5e-3, warmup=50,
                        note="small enough for an iCE40 UP5K: its 20,608 weights take 165 kbit "
                             "as int8 (16 % of the 1 Mbit SPRAM) or 82 kbit as int4, which leaves "
                             "room in the 120 kbit of block RAM for an int8 KV cache (2 layers x "
                             "K and V x 64 positions x 16 = 33 kbit)"),
}


def build_tokenizer(chars):
    """A ``tokenizers`` tokenizer with one token per character (id = index in ``chars``).

    A BPE model without merges and without a pre-tokenizer splits text into single characters;
    the ``Fuse`` decoder joins them with nothing in between, so decoding inverts encoding exactly.
    """
    from tokenizers import Tokenizer, decoders, models
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def _config(preset, vocab_size):
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=preset.dim, intermediate_size=preset.ffn_dim,
        num_hidden_layers=preset.n_layers, num_attention_heads=preset.n_heads,
        num_key_value_heads=preset.n_kv_heads, head_dim=preset.dim // preset.n_heads,
        max_position_embeddings=preset.context, rms_norm_eps=1e-5, hidden_act="silu",
        tie_word_embeddings=preset.tied, attention_bias=False, mlp_bias=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        initializer_range=0.02, use_cache=True, bos_token_id=None, eos_token_id=None,
        pad_token_id=None)


def _mean_loss(model, ids, windows, context, batch):
    """Mean next-character cross-entropy (nats) over ``windows`` start offsets into ``ids``."""
    import torch
    import torch.nn.functional as F
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            x = torch.stack([ids[s:s + context + 1] for s in windows[i:i + batch]])
            logits = model(input_ids=x[:, :-1]).logits
            total += F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(),
                                     reduction="sum").item()
            count += x[:, 1:].numel()
    return total / count


def _greedy(model, tokenizer, prompt, n):
    import torch
    x = torch.tensor([tokenizer.encode(prompt).ids])
    with torch.no_grad():
        y = model.generate(x, max_new_tokens=n, do_sample=False, pad_token_id=0)
    return tokenizer.decode(y[0, x.shape[1]:].tolist())


def train(preset_name, out, *, steps=None, threads=2, eval_windows=None, log=print):
    """Train ``preset_name`` for ``steps`` (default: the preset's) and save it to ``out``.

    Returns a dict with the parameter count, the train and held-out losses and the samples.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    preset = PRESETS[preset_name]
    if steps is not None:
        preset = replace(preset, steps=steps)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)

    train_text, heldout_text = corpus.split()
    chars = corpus.alphabet(train_text + heldout_text)
    tokenizer = build_tokenizer(chars)
    table = np.zeros(128, dtype=np.int64)
    table[[ord(c) for c in chars]] = np.arange(len(chars))
    train_ids = torch.from_numpy(table[np.frombuffer(train_text.encode("ascii"), np.uint8)])
    heldout_ids = torch.from_numpy(table[np.frombuffer(heldout_text.encode("ascii"), np.uint8)])
    if tokenizer.encode(heldout_text).ids != heldout_ids.tolist():
        raise AssertionError("tokenizer.json and the training encoding disagree")

    config = _config(preset, len(chars))
    model = LlamaForCausalLM(config)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=preset.lr, betas=(0.9, 0.99), foreach=False)

    def lr_at(step):  # linear warm-up, then cosine decay to a tenth
        if step < preset.warmup:
            return preset.lr * (step + 1) / preset.warmup
        t = (step - preset.warmup) / max(1, preset.steps - preset.warmup)
        return preset.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    generator = torch.Generator().manual_seed(SEED)
    span = preset.context + 1
    log(f"{preset_name}: {n_params:,} parameters, vocab {len(chars)}, {preset.steps} steps of "
        f"{preset.batch}x{preset.context} characters on {threads} threads")
    start = time.monotonic()
    for step in range(preset.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        starts = torch.randint(0, len(train_ids) - span, (preset.batch,), generator=generator)
        x = torch.stack([train_ids[s:s + span] for s in starts.tolist()])
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == preset.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  "
                f"{time.monotonic() - start:6.1f} s")
    train_seconds = time.monotonic() - start

    model.eval()
    n_heldout = (len(heldout_ids) - 1) // preset.context
    windows = [i * preset.context for i in range(n_heldout)][:eval_windows]
    heldout_loss = _mean_loss(model, heldout_ids, windows, preset.context, 64)
    train_windows = torch.randint(0, len(train_ids) - span, (len(windows),),
                                  generator=torch.Generator().manual_seed(SEED + 1)).tolist()
    train_loss = _mean_loss(model, train_ids, train_windows, preset.context, 64)
    samples = {p: _greedy(model, tokenizer, p, preset.context - len(p)) for p in PROMPTS}
    log(f"train loss {train_loss:.4f}, held-out loss {heldout_loss:.4f} nats/char "
        f"({len(windows) * preset.context:,} characters), {train_seconds:.0f} s of training")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save(str(out / "tokenizer.json"))
    # Lets `AutoTokenizer.from_pretrained` load it too (transformers 4 and 5 alike).
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
         "model_max_length": preset.context}, indent=2) + "\n", encoding="utf-8")
    result = {"preset": preset_name, "params": n_params, "steps": preset.steps,
              "vocab": len(chars), "train_loss": round(train_loss, 4),
              "heldout_loss": round(heldout_loss, 4),
              "heldout_chars": len(windows) * preset.context,
              "samples": samples}
    (out / "README.md").write_text(_readme(preset_name, preset, result, threads), encoding="utf-8")
    log(json.dumps(samples, indent=1))
    result["train_seconds"] = train_seconds
    return result


def _readme(name, preset, result, threads):
    shape = asdict(preset)
    arch = (f"dim {shape['dim']}, {shape['n_layers']} layers, {shape['n_heads']} heads "
            f"({shape['n_kv_heads']} KV), head dim {preset.dim // preset.n_heads}, SwiGLU FFN "
            f"{shape['ffn_dim']}, context {shape['context']}, RoPE theta 10000 (Hugging Face "
            f"`rotate_half` pairing), RMSNorm eps 1e-5, "
            + ("tied embedding/LM head" if preset.tied else "separate LM head"))
    samples = "\n".join(f"Prompt `{p}`:\n\n```\n{p}{s}\n```\n"
                        for p, s in result["samples"].items())
    return f"""# {name}: a char-level Llama trained on the King James Bible

Bundled with hardwire: {preset.note}. A standard Hugging Face `LlamaForCausalLM` directory
(float32 safetensors) with a one-token-per-character `tokenizer.json`.

- Architecture: {arch}.
- Parameters: {result['params']:,}; vocabulary: {result['vocab']} characters (newline, space,
  punctuation, letters; id = position in sorted order); no BOS/EOS tokens.
- Corpus: the King James Version from Debian's `bible-kjv` package (public domain), verse labels
  dropped, one verse per line (`scripts/corpus.py`). Colossians to Revelation (5 %) are held out.
- Training: {preset.steps} AdamW steps of {preset.batch} random windows of {preset.context + 1}
  characters, peak learning rate {preset.lr}, {preset.warmup} warm-up steps then cosine decay to a
  tenth, weight decay 0.01, gradient clip 1.0, seed {SEED}, float32, deterministic:

      python scripts/corpus.py
      python scripts/train_bundled.py --preset {name} --out models/{name} --threads {threads}

- Loss after training (nats per character): train {result['train_loss']:.4f} (random windows),
  held-out {result['heldout_loss']:.4f} ({result['heldout_chars']:,} characters of the held-out
  books in windows of {preset.context}).

## Greedy output

{samples}"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, help="override the preset's step count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-windows", type=int,
                        help="limit the held-out evaluation to this many windows (quick runs)")
    args = parser.parse_args(argv)
    for flag in ("steps", "threads", "eval_windows"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be a positive integer, not {value}")
    result = train(args.preset, args.out, steps=args.steps, threads=args.threads,
                   eval_windows=args.eval_windows)
    print(f"wrote {args.out} ({result['params']:,} parameters, held-out "
          f"{result['heldout_loss']:.4f} nats/char, {result['train_seconds']:.0f} s training)")


if __name__ == "__main__":
    sys.exit(main())

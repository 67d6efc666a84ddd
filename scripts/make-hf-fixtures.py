#!/usr/bin/env python3
"""Tiny random-weight Hugging Face checkpoints, and their conversion by llama.cpp's own converter.

Writes each fixture folder under OUT (config.json, generation_config.json, model.safetensors,
tokenizer files), then, with --llama-cpp, converts it once with that tree's
`convert_hf_to_gguf.py` (`--outtype bf16`) to `OUT/<name>.llamacpp.gguf` and writes
`OUT/PROVENANCE.md` (versions, command, sizes, sha256). The stored fixtures were made with
the tree vendored in the `llama-cpp-python==0.3.36` sdist (llama.cpp 0c1e57098) and the Python
packages its requirements pin; see README ("Hugging Face fixtures"). Not run in CI: the outputs are
committed, and tests compare against them.

    python scripts/make-hf-fixtures.py tests/fixtures/hf --llama-cpp $LLAMA_CPP \
        --spm-tokenizer /path/to/tokenizer.model
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file


def random_matrix(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    """normal(0, 0.02) with a few +-U(0.25, 1.0) outliers, as the shared golden fixtures."""
    w = torch.randn(rows, cols, generator=gen, dtype=torch.float32) * 0.02
    n_out = max(2, rows * cols // 20000)
    idx = torch.randint(0, rows * cols, (n_out,), generator=gen)
    mag = torch.rand(n_out, generator=gen, dtype=torch.float32) * 0.75 + 0.25
    sign = torch.where(torch.rand(n_out, generator=gen) < 0.5, -1.0, 1.0)
    w.view(-1)[idx] = mag * sign
    return w


def gemma_norm(gen: torch.Generator, n: int) -> torch.Tensor:
    """Gemma stores RMSNorm weights as offsets from 1 (the model multiplies by 1 + w)."""
    return torch.randn(n, generator=gen, dtype=torch.float32) * 0.1


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def gemma3(out: Path, spm: Path) -> None:
    """Gemma3ForCausalLM (text only), shaped like Gemma 3 1B scaled down: 6 layers so the
    5-sliding / 1-global pattern appears once, a 16-token sliding window, q/k norms, the four
    norms per block, tied embeddings. Tokenizer: the given SentencePiece model (the stored one is
    shared/golden/hf/llama-spm's: BPE, vocab 1000, byte fallback) with a GemmaTokenizer config.
    Weights: seed 20, BF16; matrices normal(0, 0.02) with outliers, norms normal(0, 0.1) offsets."""
    d = out / "gemma3"
    d.mkdir(parents=True, exist_ok=True)
    hidden, inter, n_layer, n_head, n_kv, head_dim, vocab = 64, 128, 6, 2, 1, 32, 1000
    cfg = {
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "final_logit_softcapping": None,
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": 2048,
        "model_type": "gemma3_text",
        "num_attention_heads": n_head,
        "num_hidden_layers": n_layer,
        "num_key_value_heads": n_kv,
        "pad_token_id": 0,
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": 16,
        "sliding_window_pattern": 6,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.57.6",
        "use_cache": True,
        "vocab_size": vocab,
    }
    write_json(d / "config.json", cfg)
    write_json(d / "generation_config.json",
               {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                "transformers_version": "4.57.6"})
    shutil.copyfile(spm, d / "tokenizer.model")
    special = {"content": "", "lstrip": False, "normalized": False, "rstrip": False,
               "single_word": False, "special": True}
    write_json(d / "tokenizer_config.json", {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): {**special, "content": c}
                                 for i, c in enumerate(["<unk>", "<s>", "</s>"])},
        "bos_token": "<s>",
        "chat_template": "{{ bos_token }}{% for message in messages %}"
                         "{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] "
                         "+ '<end_of_turn>\n' }}{% endfor %}",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": 2048,
        "pad_token": "<unk>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
    })

    gen = torch.Generator().manual_seed(20)
    t = {"model.embed_tokens.weight": random_matrix(gen, vocab, hidden)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = gemma_norm(gen, hidden)
        t[p + "self_attn.q_proj.weight"] = random_matrix(gen, n_head * head_dim, hidden)
        t[p + "self_attn.k_proj.weight"] = random_matrix(gen, n_kv * head_dim, hidden)
        t[p + "self_attn.v_proj.weight"] = random_matrix(gen, n_kv * head_dim, hidden)
        t[p + "self_attn.o_proj.weight"] = random_matrix(gen, hidden, n_head * head_dim)
        t[p + "self_attn.q_norm.weight"] = gemma_norm(gen, head_dim)
        t[p + "self_attn.k_norm.weight"] = gemma_norm(gen, head_dim)
        t[p + "post_attention_layernorm.weight"] = gemma_norm(gen, hidden)
        t[p + "pre_feedforward_layernorm.weight"] = gemma_norm(gen, hidden)
        t[p + "post_feedforward_layernorm.weight"] = gemma_norm(gen, hidden)
        t[p + "mlp.gate_proj.weight"] = random_matrix(gen, inter, hidden)
        t[p + "mlp.up_proj.weight"] = random_matrix(gen, inter, hidden)
        t[p + "mlp.down_proj.weight"] = random_matrix(gen, hidden, inter)
    t["model.norm.weight"] = gemma_norm(gen, hidden)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in t.items()},
              str(d / "model.safetensors"), metadata={"format": "pt"})


FIXTURES = {"gemma3": gemma3}


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp tree whose converter to run")
    ap.add_argument("--spm-tokenizer", type=Path, required=True,
                    help="a SentencePiece tokenizer.model to ship (vocab 1000: <unk> <s> </s>)")
    ap.add_argument("--sdist", type=Path,
                    help="the llama-cpp-python sdist the tree came from (its sha256 is recorded)")
    ap.add_argument("--only", nargs="*", default=sorted(FIXTURES))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name in a.only:
        FIXTURES[name](a.out, a.spm_tokenizer)
    if a.llama_cpp is None:
        return 0
    lc = a.llama_cpp.resolve()
    env = {**os.environ, "PYTHONPATH": str(lc / "gguf-py")}
    lines = ["# Provenance", "",
             f"Made by `scripts/make-hf-fixtures.py`; converter: `{lc.name}` tree from the "
             "llama-cpp-python==0.3.36 sdist (llama.cpp 0c1e57098), its bundled gguf-py; nothing "
             "else of the tree is used and nothing is built." +
             (f" sdist `{a.sdist.name}` sha256 `{sha256(a.sdist)}`." if a.sdist else ""), "",
             "Python: " + sys.version.split()[0] + "; packages: " + ", ".join(
                 f"{m} {importlib.metadata.version(m)}" for m in
                 ["torch", "transformers", "numpy", "sentencepiece", "tokenizers",
                  "safetensors", "protobuf"]), ""]
    for name in a.only:
        gguf = a.out / f"{name}.llamacpp.gguf"
        cmd = [sys.executable, str(lc / "convert_hf_to_gguf.py"), name, "--outtype", "bf16",
               "--outfile", gguf.name]
        subprocess.run(cmd, cwd=a.out, env=env, check=True)
        lines += [f"## {name}", "", " ".join(FIXTURES[name].__doc__.split()), "",
                  f"Command (in `{a.out}`): `PYTHONPATH=$LLAMA_CPP/gguf-py python "
                  f"$LLAMA_CPP/convert_hf_to_gguf.py {name} --outtype bf16 --outfile {gguf.name}`",
                  "", "| file | bytes | sha256 |", "| --- | ---: | --- |"]
        files = sorted((a.out / name).iterdir()) + [gguf]
        for f in files:
            lines.append(f"| `{f.relative_to(a.out)}` | {f.stat().st_size} | `{sha256(f)}` |")
        lines.append("")
    (a.out / "PROVENANCE.md").write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

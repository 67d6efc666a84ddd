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


def gemma3(out: Path, spm: Path, bpe_json: Path) -> None:
    """Gemma3ForCausalLM (text only), shaped like Gemma 3 1B scaled down: 6 layers so the
    5-sliding / 1-global pattern appears once, a 16-token sliding window, q/k norms, the four
    norms per block, tied embeddings. Tokenizer: the given SentencePiece model (the stored one is
    shared/golden/hf/llama-spm's: BPE, vocab 1000, byte fallback) with a GemmaTokenizer config.
    Weights: seed 20, BF16; matrices normal(0, 0.02) with outliers, norms normal(0, 0.1) offsets."""
    gemma3_like(out / "gemma3", 6, 1000, 20, spm=spm)


def gemma_spm_config(d: Path, spm: Path) -> None:
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


def gemma3_bpe(out: Path, spm: Path, bpe_json: Path) -> None:
    """Gemma3ForCausalLM with a `tokenizer.json` and no `tokenizer.model` (the converter's other
    vocabulary path): shared/golden/hf/llama-bpe's byte-level BPE and tokenizer_config.json, 2
    layers, vocab_size 1024 with 1024 embedding rows, of which the converter keeps
    len(model.vocab) + len(added_tokens) = 1004 while the vocabulary is padded to 1024. Weights:
    seed 22. The converter does not know this tokenizer's hash, so it runs through WRAPPER,
    which names it gpt-2 (as the shared fixtures). llama.cpp cannot load the result (token_embd
    has 1004 rows, the vocabulary 1024): the fixture pins the converter's behaviour, not a
    usable model."""
    gemma3_like(out / "gemma3-bpe", 2, 1024, 22, bpe_json=bpe_json)


def gemma3_like(d: Path, n_layer: int, vocab: int, seed: int, spm: Path | None = None,
                bpe_json: Path | None = None) -> None:
    """A Gemma3ForCausalLM checkpoint in `d` (see gemma3 and gemma3_bpe)."""
    d.mkdir(parents=True, exist_ok=True)
    hidden, inter, n_head, n_kv, head_dim = 64, 128, 2, 1, 32
    # bos, eos, pad: SentencePiece <s> </s> <unk>; the BPE vocabulary's <s> </s>, no pad.
    ids = (1, 2, 0) if bpe_json is None else (0, 1, None)
    cfg = {
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": ids[0],
        "eos_token_id": ids[1],
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
        "pad_token_id": ids[2],
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
               {"bos_token_id": ids[0], "eos_token_id": ids[1], "pad_token_id": ids[2],
                "transformers_version": "4.57.6"})
    if bpe_json is not None:
        shutil.copyfile(bpe_json, d / "tokenizer.json")
        shutil.copyfile(bpe_json.parent / "tokenizer_config.json", d / "tokenizer_config.json")
    else:
        gemma_spm_config(d, spm)
    gen = torch.Generator().manual_seed(seed)
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


# The fixture's own tokenizer class, written here (not Moonshot's file): a tiktoken BPE with
# Kimi-K2's conventions as llama.cpp's converter reads them: `model._mergeable_ranks` from
# `tiktoken.model` (base64 token, rank), and `special_tokens` naming the 256 ids after the ranks
# from `added_tokens_decoder`, the rest `<|reserved_token_N|>`.
KIMI_TOKENIZER_PY = """\
import base64
import os

import tiktoken
from transformers import PreTrainedTokenizer

PAT = (r"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
       r"|\\s+(?!\\S)|\\s+")


class TikTokenTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tiktoken.model"}
    model_input_names = ["input_ids", "attention_mask"]
    num_reserved_special_tokens = 256

    def __init__(self, vocab_file, added_tokens_decoder=None, **kwargs):
        ranks = {}
        with open(vocab_file, "rb") as f:
            for line in f.read().splitlines():
                if line:
                    tok, rank = line.split()
                    ranks[base64.b64decode(tok)] = int(rank)
        n = len(ranks)
        named = {}
        for idx, tok in (added_tokens_decoder or {}).items():
            named[int(idx)] = tok.content if hasattr(tok, "content") else tok["content"]
        self.special_tokens = {named.get(i, f"<|reserved_token_{i}|>"): i
                               for i in range(n, n + self.num_reserved_special_tokens)}
        self.model = tiktoken.Encoding(name=os.path.basename(vocab_file), pat_str=PAT,
                                       mergeable_ranks=ranks, special_tokens=self.special_tokens)
        self.n_words = self.model.n_vocab
        self.decoder = {i: t for t, i in ranks.items()}
        super().__init__(added_tokens_decoder=added_tokens_decoder, **kwargs)

    @property
    def vocab_size(self):
        return self.n_words

    def get_vocab(self):
        v = {self.convert_ids_to_tokens(i): i for i in range(self.n_words)}
        v.update(self.added_tokens_encoder)
        return v

    def encode(self, text, **kwargs):
        return self.model.encode(text, allowed_special="all")

    def _tokenize(self, text, **kwargs):
        return [self.decoder[t].decode("latin-1") for t in self.model.encode_ordinary(text)]

    def _convert_token_to_id(self, token):
        return self.model.encode_single_token(token.encode("latin-1"))

    def _convert_id_to_token(self, index):
        if index in self.decoder:
            return self.decoder[index].decode("latin-1")
        for t, i in self.special_tokens.items():
            if i == index:
                return t
        return None
"""


def kimi_k2(out: Path, spm: Path, bpe_json: Path) -> None:
    """DeepseekV3ForCausalLM with Kimi-K2's tokenizer layout: `tiktoken.model` (996 ranks: the
    256 bytes and 740 merges of shared/golden/hf/llama-bpe's byte-level BPE, in its id order),
    256 special ids after them (6 named in `added_tokens_decoder`, as Kimi-K2's [BOS], [EOS],
    <|im_end|>, ...; the rest reserved), vocab_size 1280 (so 28 [PAD] ids), a tokenizer class
    in `tokenization_kimi.py` loaded with trust_remote_code, no tokenizer.json. The model: 2
    layers (1 dense, 1 MoE: 4 experts, 2 used, 1 shared, sigmoid routing with
    e_score_correction_bias), MLA, YaRN as Kimi-K2 (factor 32, beta_fast 1, beta_slow 1).
    Weights: seed 21, BF16 (the bias F32). The converter does not know this tokenizer's hash
    (chkhsh 35d37f3aab4b56f7393a7dc60e73a2d954fe82be659a09552614afe8199f5ce3; Kimi-K2's own is
    81212dc7...), so it runs through WRAPPER, which names it kimi-k2."""
    d = out / "kimi-k2"
    d.mkdir(parents=True, exist_ok=True)
    tj = json.loads(bpe_json.read_text(encoding="utf-8"))
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    specials = {a["id"] for a in tj["added_tokens"]}
    ranks = []
    for tok, i in sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1]):
        if i not in specials:
            ranks.append(bytes(byte_decoder[c] for c in tok))
    import base64
    (d / "tiktoken.model").write_bytes(b"".join(
        base64.b64encode(t) + b" " + str(r).encode() + b"\n" for r, t in enumerate(ranks)))
    n_base = len(ranks)
    (d / "tokenization_kimi.py").write_text(KIMI_TOKENIZER_PY, encoding="utf-8")
    named = ["[BOS]", "[EOS]", "<|im_end|>", "<|im_user|>", "<|im_assistant|>", "<|im_system|>"]
    special = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
               "special": True}
    write_json(d / "tokenizer_config.json", {
        "added_tokens_decoder": {str(n_base + i): {**special, "content": c}
                                 for i, c in enumerate(named)},
        "auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]},
        "bos_token": "[BOS]",
        "chat_template": "{% for message in messages %}{{ '<|im_' + message['role'] + '|>' "
                         "+ message['content'] + '<|im_end|>' }}{% endfor %}",
        "clean_up_tokenization_spaces": False,
        "eos_token": "[EOS]",
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "[EOS]",
        "tokenizer_class": "TikTokenTokenizer",
        "unk_token": "[EOS]",
    })
    hidden, n_head, vocab = 64, 2, 1280
    q_lora, kv_lora, nope, rope, v = 32, 32, 16, 16, 16
    inter, moe_inter, n_exp = 128, 32, 4
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": n_base, "eos_token_id": n_base + 1,
        "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": inter,
        "kv_lora_rank": kv_lora, "max_position_embeddings": 4096,
        "model_type": "deepseek_v3", "moe_intermediate_size": moe_inter, "moe_layer_freq": 1,
        "n_group": 1, "n_routed_experts": n_exp, "n_shared_experts": 1,
        "norm_topk_prob": True, "num_attention_heads": n_head, "num_experts_per_tok": 2,
        "num_hidden_layers": 2, "num_key_value_heads": n_head, "num_nextn_predict_layers": 0,
        "q_lora_rank": q_lora, "qk_nope_head_dim": nope, "qk_rope_head_dim": rope,
        "rms_norm_eps": 1e-06, "rope_theta": 50000.0,
        "rope_scaling": {"beta_fast": 1.0, "beta_slow": 1.0, "factor": 32.0, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "original_max_position_embeddings": 128,
                         "type": "yarn"},
        "routed_scaling_factor": 2.827, "scoring_func": "sigmoid", "tie_word_embeddings": False,
        "topk_group": 1, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
        "transformers_version": "4.57.6", "use_cache": True, "v_head_dim": v,
        "vocab_size": vocab,
    }
    write_json(d / "config.json", cfg)
    write_json(d / "generation_config.json",
               {"bos_token_id": n_base, "eos_token_id": n_base + 1,
                "transformers_version": "4.57.6"})
    gen = torch.Generator().manual_seed(21)
    norm = lambda n: 1.0 + torch.randn(n, generator=gen) * 0.1  # noqa: E731
    t = {"model.embed_tokens.weight": random_matrix(gen, vocab, hidden),
         "lm_head.weight": random_matrix(gen, vocab, hidden),
         "model.norm.weight": norm(hidden)}
    for i in range(2):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        t[p + "input_layernorm.weight"] = norm(hidden)
        t[p + "post_attention_layernorm.weight"] = norm(hidden)
        t[a + "q_a_proj.weight"] = random_matrix(gen, q_lora, hidden)
        t[a + "q_a_layernorm.weight"] = norm(q_lora)
        t[a + "q_b_proj.weight"] = random_matrix(gen, n_head * (nope + rope), q_lora)
        t[a + "kv_a_proj_with_mqa.weight"] = random_matrix(gen, kv_lora + rope, hidden)
        t[a + "kv_a_layernorm.weight"] = norm(kv_lora)
        t[a + "kv_b_proj.weight"] = random_matrix(gen, n_head * (nope + v), kv_lora)
        t[a + "o_proj.weight"] = random_matrix(gen, hidden, n_head * v)
        mlps = [p + "mlp"] if i == 0 else (
            [f"{p}mlp.experts.{e}" for e in range(n_exp)] + [p + "mlp.shared_experts"])
        ff = inter if i == 0 else moe_inter
        for m in mlps:
            t[m + ".gate_proj.weight"] = random_matrix(gen, ff, hidden)
            t[m + ".up_proj.weight"] = random_matrix(gen, ff, hidden)
            t[m + ".down_proj.weight"] = random_matrix(gen, hidden, ff)
        if i > 0:
            t[p + "mlp.gate.weight"] = random_matrix(gen, n_exp, hidden)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in t.items()}
    tensors["model.layers.1.mlp.gate.e_score_correction_bias"] = (
        torch.randn(n_exp, generator=gen) * 0.02)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})


def gpt_oss(out: Path, spm: Path, bpe_json: Path) -> None:
    """GptOssForCausalLM laid out as openai/gpt-oss-20b scaled down: 2 layers (layer_types
    sliding, full; an 8-token sliding window), 4 heads of 32 with 2 KV heads (q is 128 wide, the
    hidden size 64), q/k/v/o biases, attention sinks, 4 experts (2 used) with a biased router,
    experts stored as the real checkpoints store them: MXFP4 `gate_up_proj_blocks/_scales`
    ([E, 2*I, H/32, 16] nibbles, gate and up rows interleaved; E8M0 scales 2^-9..2^-6) and
    `down_proj_blocks/_scales`, BF16 `gate_up_proj_bias` and `down_proj_bias`,
    `quantization_config.quant_method` mxfp4, swiglu_limit 7, YaRN as gpt-oss (factor 32,
    original context 4096). Tokenizer: shared/golden/hf/llama-bpe's byte-level BPE (the real one
    is o200k-based, 201088 tokens), vocab_size 1024 (so 20 [PAD] ids). Weights: seed 23, BF16
    (sinks and biases BF16 as in the real checkpoint). The converter does not know this
    tokenizer's hash, so it runs through WRAPPER, which names it gpt-2 (its own pre-tokenizer;
    gpt-oss's is gpt-4o)."""
    d = out / "gpt-oss"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bpe_json, d / "tokenizer.json")
    shutil.copyfile(bpe_json.parent / "tokenizer_config.json", d / "tokenizer_config.json")
    hidden, n_head, n_kv, head_dim, inter, n_exp, vocab, n_layer = 64, 4, 2, 32, 64, 4, 1024, 2
    cfg = {
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": True, "attention_dropout": 0.0,
        "eos_token_id": 1, "experts_per_token": 2, "head_dim": head_dim, "hidden_act": "silu",
        "hidden_size": hidden, "initial_context_length": 4096, "initializer_range": 0.02,
        "intermediate_size": inter,
        "layer_types": ["sliding_attention", "full_attention"],
        "max_position_embeddings": 131072, "model_type": "gpt_oss",
        "num_attention_heads": n_head, "num_experts_per_tok": 2, "num_hidden_layers": n_layer,
        "num_key_value_heads": n_kv, "num_local_experts": n_exp, "output_router_logits": False,
        "pad_token_id": 1,
        "quantization_config": {
            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"],
            "quant_method": "mxfp4"},
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                         "original_max_position_embeddings": 4096, "rope_type": "yarn",
                         "truncate": False},
        "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 8,
        "swiglu_limit": 7.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.57.6", "use_cache": True, "vocab_size": vocab,
    }
    write_json(d / "config.json", cfg)
    write_json(d / "generation_config.json",
               {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
                "transformers_version": "4.57.6"})
    gen = torch.Generator().manual_seed(23)
    norm = lambda n: 1.0 + torch.randn(n, generator=gen) * 0.1  # noqa: E731
    vec = lambda n, s=0.02: torch.randn(n, generator=gen) * s  # noqa: E731

    def mxfp4(rows: int, cols: int):
        blocks = torch.randint(0, 256, (n_exp, rows, cols // 32, 16), generator=gen,
                               dtype=torch.uint8)
        scales = torch.randint(127 - 9, 127 - 5, (n_exp, rows, cols // 32), generator=gen,
                               dtype=torch.uint8)
        return blocks, scales

    t = {"model.embed_tokens.weight": random_matrix(gen, vocab, hidden),
         "lm_head.weight": random_matrix(gen, vocab, hidden),
         "model.norm.weight": norm(hidden)}
    raw = {}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        t[p + "input_layernorm.weight"] = norm(hidden)
        t[p + "post_attention_layernorm.weight"] = norm(hidden)
        for proj, rows, cols in [("q_proj", n_head * head_dim, hidden),
                                 ("k_proj", n_kv * head_dim, hidden),
                                 ("v_proj", n_kv * head_dim, hidden),
                                 ("o_proj", hidden, n_head * head_dim)]:
            t[a + proj + ".weight"] = random_matrix(gen, rows, cols)
            t[a + proj + ".bias"] = vec(rows)
        t[a + "sinks"] = torch.randn(n_head, generator=gen)
        t[p + "mlp.router.weight"] = random_matrix(gen, n_exp, hidden)
        t[p + "mlp.router.bias"] = vec(n_exp)
        e = p + "mlp.experts."
        raw[e + "gate_up_proj_blocks"], raw[e + "gate_up_proj_scales"] = mxfp4(2 * inter, hidden)
        t[e + "gate_up_proj_bias"] = vec(n_exp * 2 * inter).view(n_exp, 2 * inter)
        raw[e + "down_proj_blocks"], raw[e + "down_proj_scales"] = mxfp4(hidden, inter)
        t[e + "down_proj_bias"] = vec(n_exp * hidden).view(n_exp, hidden)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in t.items()}
    tensors.update(raw)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})



# GLM-4.5's added tokens, in its id order (151329...), placed after the fixture's 1000 BPE ids.
GLM_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                "<|user|>", "<|assistant|>", "<|observation|>"]


def glm4moe(out: Path, spm: Path, bpe_json: Path) -> None:
    """Glm4MoeForCausalLM shaped like GLM-4.5 scaled down: 3 layers (layer 0 dense,
    first_k_dense_replace 1; layers 1-2 MoE: 8 routed experts, 2 used, 1 shared, sigmoid routing
    with e_score_correction_bias, norm_topk_prob, routed_scaling_factor 2.5), GQA (4 heads, 2 KV,
    head_dim 32) with q/k/v biases and per-head q/k norms (use_qk_norm), partial rotary (factor
    0.5: 16 of 32 dims), untied lm_head, and one NextN/MTP layer (layer 3: a full MoE decoder
    layer plus eh_proj, enorm, hnorm, embed_tokens, shared_head.{head,norm}). Tokenizer:
    shared/golden/hf/llama-bpe's byte-level BPE (vocab 1000, no BOS added) with GLM-4.5's 10
    added tokens at ids 1000-1009 (<|endoftext|>, [MASK], [gMASK], ... <|observation|>),
    vocab_size 1024 (so 14 [PAD] ids). Weights: seed 23, BF16 (the expert bias F32); matrices
    normal(0, 0.02) with outliers, norms 1 + normal(0, 0.1), biases normal(0, 0.02), expert
    bias normal(0, 0.05). The converter does not know this tokenizer's hash, so it runs through
    WRAPPER, which names it gpt-2 (as the shared fixtures)."""
    d = out / "glm4moe"
    d.mkdir(parents=True, exist_ok=True)
    tj = json.loads(bpe_json.read_text(encoding="utf-8"))
    n_base = len(tj["model"]["vocab"])
    added = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
             "special": True}
    tj["added_tokens"] += [{"id": n_base + i, "content": c, **added}
                           for i, c in enumerate(GLM_SPECIALS)]
    tj["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True,
                            "trim_offsets": False, "use_regex": True}
    (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2) + "\n",
                                      encoding="utf-8")
    ids = {c: n_base + i for i, c in enumerate(GLM_SPECIALS)}
    eos = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    write_json(d / "tokenizer_config.json", {
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"}
                                 for a in tj["added_tokens"]},
        "chat_template": "[gMASK]<sop>{% for message in messages %}{{ '<|' + message['role'] "
                         "+ '|>\n' + message['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}",
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "eos_token": "<|endoftext|>",
        "model_max_length": 128000,
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "remove_space": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
    hidden, n_head, n_kv, head_dim, vocab = 64, 4, 2, 32, 1024
    inter, moe_inter, n_exp, n_layer = 128, 32, 8, 3
    cfg = {
        "architectures": ["Glm4MoeForCausalLM"],
        "attention_bias": True, "attention_dropout": 0.0,
        "eos_token_id": eos, "first_k_dense_replace": 1, "head_dim": head_dim,
        "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": inter, "max_position_embeddings": 4096,
        "model_type": "glm4_moe", "moe_intermediate_size": moe_inter, "n_group": 1,
        "n_routed_experts": n_exp, "n_shared_experts": 1, "norm_topk_prob": True,
        "num_attention_heads": n_head, "num_experts_per_tok": 2,
        "num_hidden_layers": n_layer, "num_key_value_heads": n_kv,
        "num_nextn_predict_layers": 1, "pad_token_id": ids["<|endoftext|>"],
        "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-05, "rope_scaling": None,
        "rope_theta": 1000000, "routed_scaling_factor": 2.5, "tie_word_embeddings": False,
        "topk_group": 1, "torch_dtype": "bfloat16", "transformers_version": "4.57.6",
        "use_cache": True, "use_qk_norm": True, "vocab_size": vocab,
    }
    write_json(d / "config.json", cfg)
    write_json(d / "generation_config.json",
               {"do_sample": True, "eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"],
                "temperature": 0.6, "top_p": 0.95, "transformers_version": "4.57.6"})
    gen = torch.Generator().manual_seed(23)
    norm = lambda n: 1.0 + torch.randn(n, generator=gen) * 0.1  # noqa: E731
    bias = lambda n: torch.randn(n, generator=gen) * 0.02  # noqa: E731
    t = {"model.embed_tokens.weight": random_matrix(gen, vocab, hidden),
         "lm_head.weight": random_matrix(gen, vocab, hidden),
         "model.norm.weight": norm(hidden)}
    f32 = {}
    for i in range(n_layer + 1):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        t[p + "input_layernorm.weight"] = norm(hidden)
        t[p + "post_attention_layernorm.weight"] = norm(hidden)
        for proj, rows in (("q", n_head * head_dim), ("k", n_kv * head_dim),
                           ("v", n_kv * head_dim)):
            t[a + proj + "_proj.weight"] = random_matrix(gen, rows, hidden)
            t[a + proj + "_proj.bias"] = bias(rows)
        t[a + "o_proj.weight"] = random_matrix(gen, hidden, n_head * head_dim)
        t[a + "q_norm.weight"] = norm(head_dim)
        t[a + "k_norm.weight"] = norm(head_dim)
        mlps = [p + "mlp"] if i == 0 else (
            [f"{p}mlp.experts.{e}" for e in range(n_exp)] + [p + "mlp.shared_experts"])
        ff = inter if i == 0 else moe_inter
        for m in mlps:
            t[m + ".gate_proj.weight"] = random_matrix(gen, ff, hidden)
            t[m + ".up_proj.weight"] = random_matrix(gen, ff, hidden)
            t[m + ".down_proj.weight"] = random_matrix(gen, hidden, ff)
        if i > 0:
            t[p + "mlp.gate.weight"] = random_matrix(gen, n_exp, hidden)
            f32[p + "mlp.gate.e_score_correction_bias"] = torch.randn(n_exp, generator=gen) * 0.05
        if i == n_layer:
            t[p + "eh_proj.weight"] = random_matrix(gen, hidden, 2 * hidden)
            t[p + "enorm.weight"] = norm(hidden)
            t[p + "hnorm.weight"] = norm(hidden)
            t[p + "embed_tokens.weight"] = random_matrix(gen, vocab, hidden)
            t[p + "shared_head.head.weight"] = random_matrix(gen, vocab, hidden)
            t[p + "shared_head.norm.weight"] = norm(hidden)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in t.items()}
    tensors.update(f32)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})


FIXTURES = {"gemma3": gemma3, "gemma3-bpe": gemma3_bpe, "kimi-k2": kimi_k2, "gpt-oss": gpt_oss,
            "glm4moe": glm4moe}

# The pre-tokenizer a fixture's tokenizer is named by when the converter's hash table does not know
# it (see README: the fixture tokenizers are trained here, so their hashes are new).
PRE_FALLBACK = {"gemma3-bpe": "gpt-2", "kimi-k2": "kimi-k2", "gpt-oss": "gpt-2", "glm4moe": "gpt-2"}


# Runs the converter with one change: where it refuses a BPE pre-tokenizer hash it does not know
# (NotImplementedError from get_vocab_base_pre), the fixture's pre-tokenizer name is used.
WRAPPER = """
import sys
sys.path[:0] = [{lc!r}, {lc!r} + "/gguf-py"]
sys.argv[0] = "convert_hf_to_gguf.py"
from conversion import base
orig = base.TextModel.get_vocab_base_pre
def named(self, tokenizer):
    try:
        return orig(self, tokenizer)
    except NotImplementedError:
        return {pre!r}
base.TextModel.get_vocab_base_pre = named
import convert_hf_to_gguf
convert_hf_to_gguf.main()
"""


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp tree whose converter to run")
    ap.add_argument("--spm-tokenizer", type=Path, required=True,
                    help="a SentencePiece tokenizer.model to ship (vocab 1000: <unk> <s> </s>)")
    ap.add_argument("--bpe-tokenizer", type=Path, required=True,
                    help="a byte-level BPE tokenizer.json (vocab 1000, 4 added tokens first) whose "
                         "bytes and merges become kimi-k2's tiktoken ranks")
    ap.add_argument("--sdist", type=Path,
                    help="the llama-cpp-python sdist the tree came from (its sha256 is recorded)")
    ap.add_argument("--only", nargs="*", default=sorted(FIXTURES))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name in a.only:
        FIXTURES[name](a.out, a.spm_tokenizer, a.bpe_tokenizer)
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
                  "safetensors", "protobuf", "tiktoken"]), ""]
    for name in a.only:
        gguf = a.out / f"{name}.llamacpp.gguf"
        args = [name, "--outtype", "bf16", "--outfile", gguf.name]
        fallback = PRE_FALLBACK.get(name)
        if fallback is None:
            cmd = [sys.executable, str(lc / "convert_hf_to_gguf.py"), *args]
            shown = f"python $LLAMA_CPP/convert_hf_to_gguf.py {' '.join(args)}"
        else:
            cmd = [sys.executable, "-c", WRAPPER.format(lc=str(lc), pre=fallback), *args]
            shown = f"python -c \"$WRAPPER\" {' '.join(args)}"

        subprocess.run(cmd, cwd=a.out, env=env, check=True)
        lines += [f"## {name}", "", " ".join(FIXTURES[name].__doc__.split()), "",
                  f"Command (in `{a.out}`): `PYTHONPATH=$LLAMA_CPP/gguf-py {shown}`"
                  + ("" if fallback is None else
                     f" (`$WRAPPER`: this script's `WRAPPER`, the converter with an unrecognised BPE "
                     f"pre-tokenizer hash named `{fallback}` instead of refused)"),
                  "", "| file | bytes | sha256 |", "| --- | ---: | --- |"]
        files = sorted((a.out / name).iterdir()) + [gguf]
        for f in files:
            lines.append(f"| `{f.relative_to(a.out)}` | {f.stat().st_size} | `{sha256(f)}` |")
        lines.append("")
    (a.out / "PROVENANCE.md").write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/<target>/ from real files: the test models'
tokenizer keys and chat templates, their imatrix entries, the shipped recipes, a real config.json,
a real sensitivity file. Each seed is a few KB. Usage: fuzz/make_seeds.py TEST_MODELS_DIR
(needs /work/shared/data/configs and a .sens file, paths below; rerun only to refresh the seeds)."""
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = sys.argv[1]
CONFIGS = os.environ.get("CONFIGS", "/work/shared/data/configs")
SENS = os.environ.get("SENS", "/work/sens/synth-deepseek2-mla.sens")


def seed_dir(target):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    return d


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(seed_dir(target), name), "wb") as f:
        f.write(data)


def gguf_string(s):
    b = s.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(b)) + b


# --- GGUF reading (enough for KVs) ---
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_value(f, ty):
    if ty in SIZES:
        return struct.unpack(FMT[ty], f.read(SIZES[ty]))[0]
    if ty == 8:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n).decode("utf-8", "surrogateescape")
    (ety, n) = struct.unpack("<IQ", f.read(12))
    return [read_value(f, ety) for _ in range(n)]


def read_kvs(path):
    out = {}
    with open(path, "rb") as f:
        magic, _v, _nt, n_kv = struct.unpack("<4sIQQ", f.read(24))
        assert magic == b"GGUF"
        for _ in range(n_kv):
            (klen,) = struct.unpack("<Q", f.read(8))
            key = f.read(klen).decode()
            (ty,) = struct.unpack("<I", f.read(4))
            out[key] = read_value(f, ty)
    return out


def main():
    # tokenizer_gguf: metadata-only GGUFs with a cut vocabulary.
    for m in ["smollm2-768", "synth-qwen3moe"]:
        out = os.path.join(seed_dir("tokenizer_gguf"), f"{m}.kv.gguf")
        subprocess.run([sys.executable, os.path.join(HERE, "gguf_kv_seed.py"),
                        os.path.join(MODELS, f"{m}.gguf"), out, "tokenizer.", "general.architecture"], check=True)
    # chat_template: the models' templates.
    for m in ["smollm2-768", "synth-qwen3moe", "synth-deepseek2-mla"]:
        t = read_kvs(os.path.join(MODELS, f"{m}.gguf")).get("tokenizer.chat_template")
        if t:
            write("chat_template", f"{m}.jinja", t)
    write("chat_template", "loop.jinja",
          "{% for m in messages %}{{ m.role }}: {{ m.content | upper }}{% if loop.last %}!{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ bos_token }}assistant:{% endif %}")
    # hf_tokenizer: a tokenizer.json built from SmolLM2's cut vocabulary.
    kv = read_kvs(os.path.join(seed_dir("tokenizer_gguf"), "smollm2-768.kv.gguf"))
    tokens = kv["tokenizer.ggml.tokens"]
    types = kv.get("tokenizer.ggml.token_type", [1] * len(tokens))
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(tokens) if types[i] == 3]
    tj = {"version": "1.0", "added_tokens": added, "normalizer": None,
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
          "decoder": {"type": "ByteLevel"},
          "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False, "byte_fallback": False,
                    "vocab": {t: i for i, t in enumerate(tokens)},
                    "merges": kv.get("tokenizer.ggml.merges", [])}}
    write("hf_tokenizer", "smollm2-cut.json", json.dumps(tj, ensure_ascii=False))
    # hf_config: a mode byte, then config.json.
    for arch in sorted(os.listdir(CONFIGS)):
        with open(os.path.join(CONFIGS, arch, "config.json"), "rb") as f:
            write("hf_config", f"{arch}.json", b"\0" + f.read())
    with open(os.path.join(HERE, "seeds", "small-deepseek-config.json"), "rb") as f:
        small = f.read()
    write("hf_config", "small-deepseek.json", b"\0" + small)
    write("hf_config", "small-deepseek-legacy.json", b"\1" + small)
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
             "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
             "num_hidden_layers": 2, "vocab_size": 300, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
             "max_position_embeddings": 512, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    write("hf_config", "small-llama.json", b"\0" + json.dumps(llama).encode())
    # recipe: the shipped recipes.
    presets = os.path.join(ROOT, "crates", "dynquant-plan", "presets")
    for p in sorted(os.listdir(presets)):
        with open(os.path.join(presets, p), "rb") as f:
            write("recipe", p, f.read())
    # sensitivity: a real file, and the same file cut to its first tensors and groups.
    with open(SENS) as f:
        text = f.read()
    write("sensitivity", "synth-deepseek2-mla.sens", text)
    sens = json.loads(text)
    for k, v in list(sens.items()):
        if isinstance(v, list) and len(v) > 3 and k != "candidates":
            sens[k] = v[:3]
    write("sensitivity", "cut.sens", json.dumps(sens, indent=1))
    # safetensors: a mode byte (bit 0: index json, bit 1: FP8 block), then the file.
    def st(tensors):
        header, data, off = {"__metadata__": {"format": "pt"}}, b"", 0
        for name, dtype, shape, size in tensors:
            n = size
            for d in shape:
                n *= d
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
            data += bytes((i * 7) & 0x7F for i in range(n))
            off += n
        h = json.dumps(header).encode()
        return struct.pack("<Q", len(h)) + h + data
    write("safetensors", "llama-bf16.bin", b"\0" + st([
        ("model.embed_tokens.weight", "BF16", [8, 4], 2), ("model.norm.weight", "F32", [4], 4),
        ("model.layers.0.self_attn.q_proj.weight", "F16", [4, 4], 2)]))
    write("safetensors", "fp8.bin", b"\2" + st([
        ("model.layers.0.mlp.down_proj.weight", "F8_E4M3", [4, 4], 1),
        ("model.layers.0.mlp.down_proj.weight_scale_inv", "F32", [2, 2], 4)]))
    write("safetensors", "index.bin", b"\1" + json.dumps(
        {"metadata": {"total_size": 16}, "weight_map": {"w": "a.safetensors"}}).encode())
    # imatrix_dat: llama.cpp's legacy format.
    def dat(entries, chunk, dataset):
        out = struct.pack("<i", len(entries))
        for name, ncall, vals in entries:
            b = name.encode()
            out += struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, len(vals))
            out += struct.pack(f"<{len(vals)}f", *vals)
        return out + struct.pack("<i", chunk) + struct.pack("<i", len(dataset)) + dataset.encode()
    write("imatrix_dat", "two.dat", dat([("blk.0.attn_q.weight", 10, [1.0, 2.5, 0.0, 3.0]),
                                         ("blk.0.ffn_down.weight", 0, [0.5] * 8)], 10, "groups_merged.txt"))
    write("imatrix_dat", "bare.dat", dat([("output.weight", 3, [1.0, 2.0])], 0, "")[:-8])
    # imatrix_gguf: a real file's keys and its first entries, rewritten small.
    real = os.path.join(MODELS, "smollm2-768.imatrix.gguf")
    kvs = read_kvs(real)
    write("imatrix_gguf", "smollm2-cut.imatrix.gguf", imatrix_gguf(kvs, [
        ("blk.0.attn_q.weight", 8, [float(i % 5) for i in range(8)], [4.0]),
        ("blk.0.ffn_down_exps.weight", 4, [1.0] * 8, [2.0, 0.0])]))
    write("imatrix_gguf", "two.dat", dat([("blk.0.attn_q.weight", 10, [1.0, 2.5])], 1, "x"))


def imatrix_gguf(kvs, entries):
    kv_bytes = b""
    n_kv = 0
    for k, v in kvs.items():
        if not (k.startswith("imatrix.") or k.startswith("general.")):
            continue
        if isinstance(v, str):
            kv_bytes += gguf_string(k) + struct.pack("<I", 8) + gguf_string(v)
        elif isinstance(v, list):
            kv_bytes += gguf_string(k) + struct.pack("<IIQ", 9, 8, len(v)) + b"".join(gguf_string(s) for s in v)
        elif isinstance(v, int):
            kv_bytes += gguf_string(k) + struct.pack("<II", 4, v)
        else:
            continue
        n_kv += 1
    infos, data = b"", b""
    for name, n_per, sums, counts in entries:
        for tname, shape, vals in [(name + ".in_sum2", [n_per, len(counts)], sums),
                                   (name + ".counts", [1, len(counts)], counts)]:
            infos += gguf_string(tname) + struct.pack("<I", len(shape))
            infos += b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", 0, len(data))
            data += struct.pack(f"<{len(vals)}f", *vals)
            data += b"\0" * ((-len(data)) % 32)
    head = struct.pack("<4sIQQ", b"GGUF", 3, 2 * len(entries), n_kv) + kv_bytes + infos
    head += b"\0" * ((-len(head)) % 32)
    return head + data


main()

#!/usr/bin/env node
// Tokenization, detokenization and chat-template rendering through real llama.cpp
// (node-llama-cpp 3.21.1 prebuilt, llama.cpp 80fb11ac), for dynquant-tokenizer's tests.
//
// Usage:
//   node tests/oracle/tokenize.mjs MODEL TEXT_FILE [--special] [--bin OUT.bin]
//       Tokenizes the whole file (UTF-8, unchanged) with model.tokenize(text, special), which is
//       llama_tokenize(text, add_special = false, parse_special = special). Prints
//       {"tokens": [...], "n": N, "ms": tokenize time} on stdout, or with --bin writes the ids as
//       u32 little-endian to OUT.bin and prints {"n", "ms"}.
//   node tests/oracle/tokenize.mjs MODEL --request REQ.json
//       Batch mode (one model load): REQ = {"items": [{"file": PATH} | {"text": STR}, with
//       "special": bool], "info": bool, "n_vocab": N (ids scanned for EOG), "chat": [{"template": STR|null (null: the model's
//       tokenizer.chat_template), "messages": [{role, content}], "add_generation_prompt": bool,
//       "bos_token": STR, "eos_token": STR}]}. Prints {"items": [{"tokens", "ms", "detok",
//       "detok_special"}], "info": {bos, eos, eot, nl, add_bos, add_eos, eog: [ids],
//       chat_template}, "chat": [{"native" | "native_error", "js" | "js_error"}]}.
//       "detok"/"detok_special" are model.detokenize(tokens, false/true), i.e. llama_detokenize
//       with remove_special = false and unparse_special = false/true. "native" is llama.cpp's
//       own Jinja engine (AddonJinjaRenderer), "js" is @huggingface/jinja (what node-llama-cpp's
//       JinjaTemplateChatWrapper uses first).
//
// The model is loaded vocabulary-only (no weights). Exit codes: 0 ok, 1 model load failure,
// 2 usage error or unreadable input.
import { fail, openModel } from "./_llama.mjs";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const args = process.argv.slice(2);
if (args.length < 2) fail(2, "usage: tokenize.mjs MODEL TEXT_FILE [--special] [--bin OUT.bin] | MODEL --request REQ.json");
const modelPath = args[0];

function readText(path) {
    try {
        return readFileSync(path, "utf8");
    } catch (e) {
        fail(2, `error: cannot read ${path}: ${e?.message ?? e}`);
    }
}

async function loadJinja() {
    const here = dirname(fileURLToPath(import.meta.url));
    const nodeDir = resolve(process.env.DYNQUANT_NODE_DIR || join(here, "..", "..", "oracle-node"));
    const req = createRequire(join(nodeDir, "node_modules", "node-llama-cpp", "package.json"));
    return (await import(pathToFileURL(req.resolve("@huggingface/jinja")).href)).Template;
}

let llama, model;
try {
    ({ llama, model } = await openModel(modelPath, { vocabOnly: true }));
} catch (e) {
    fail(e.exitCode ?? 1, `error: ${e?.message ?? e}`);
}

function timedTokenize(text, special) {
    const t0 = process.hrtime.bigint();
    const tokens = model.tokenize(text, special);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    return { tokens, ms };
}

if (args[1] === "--request") {
    if (args.length < 3) fail(2, "usage: tokenize.mjs MODEL --request REQ.json");
    let req;
    try {
        req = JSON.parse(readText(args[2]));
    } catch (e) {
        fail(2, `error: bad request JSON: ${e?.message ?? e}`);
    }
    const out = { items: [], chat: [] };
    for (const item of req.items ?? []) {
        const text = item.file != null ? readText(item.file) : item.text;
        const { tokens, ms } = timedTokenize(text, Boolean(item.special));
        out.items.push({
            tokens,
            ms,
            detok: model.detokenize(tokens, false),
            detok_special: model.detokenize(tokens, true),
        });
    }
    if (req.info) {
        const t = model.tokens;
        const eog = [];
        for (let id = 0; id < (req.n_vocab ?? 0); id++) if (model.isEogToken(id)) eog.push(id);
        out.info = {
            bos: t.bos ?? null,
            eos: t.eos ?? null,
            eot: t.eot ?? null,
            nl: t.nl ?? null,
            add_bos: t.shouldPrependBosToken,
            add_eos: t.shouldAppendEosToken,
            eog,
            chat_template: model.fileInfo?.metadata?.tokenizer?.chat_template ?? null,
        };
    }
    let Template = null;
    for (const c of req.chat ?? []) {
        const template = c.template ?? model.fileInfo?.metadata?.tokenizer?.chat_template;
        const items = {
            messages: c.messages,
            add_generation_prompt: Boolean(c.add_generation_prompt),
            bos_token: c.bos_token ?? "",
            eos_token: c.eos_token ?? "",
        };
        const r = {};
        try {
            r.native = new llama._bindings.AddonJinjaRenderer(template).render(items);
        } catch (e) {
            r.native_error = String(e?.message ?? e);
        }
        try {
            Template ??= await loadJinja();
            r.js = new Template(template).render(items);
        } catch (e) {
            r.js_error = String(e?.message ?? e);
        }
        out.chat.push(r);
    }
    process.stdout.write(JSON.stringify(out) + "\n");
} else {
    const special = args.includes("--special");
    const binAt = args.indexOf("--bin");
    const text = readText(args[1]);
    const { tokens, ms } = timedTokenize(text, special);
    if (binAt >= 0) {
        const out = args[binAt + 1];
        if (!out) fail(2, "error: --bin needs a path");
        writeFileSync(out, Buffer.from(Uint32Array.from(tokens).buffer));
        process.stdout.write(JSON.stringify({ n: tokens.length, ms }) + "\n");
    } else {
        process.stdout.write(JSON.stringify({ tokens, n: tokens.length, ms }) + "\n");
    }
}
await model.dispose();
await llama.dispose();

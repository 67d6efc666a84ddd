#!/usr/bin/env node
// Next-token distributions from real llama.cpp (node-llama-cpp 3.21.1 prebuilt, CPU, 1 thread) for
// comparing an engine's forward pass against llama.cpp's.
//
// Usage: node distributions.mjs MODEL TEXT_FILE [--n-tokens 512] [--top-k 64] [--first 0] [--single]
//        [--context-size N] (default: the number of tokens; node-llama-cpp keeps one cell free and
//        decodes the last token of a context-filling call after a context shift)
//
// The text is read like llama-perplexity reads it (one trailing "\n" dropped) and tokenized once,
// without parsing special tokens, BOS prepended only if the vocabulary adds BOS. The first
// --n-tokens tokens are evaluated from an empty KV cache in one sequence (the first token replaced
// by BOS when the vocabulary adds BOS, as llama-perplexity does for each chunk), and for every
// position j >= --first the full-vocabulary next-token softmax (controlledEvaluate with
// generateNext.probabilities; re-normalized with a float64 sum, see perplexity.mjs) is reduced to
// its --top-k most probable tokens plus the remaining tail mass.
//
// --single: instead, every one of the --n-tokens tokens is evaluated alone from an empty cache
// (a one-token batch: no attention mixing), and positions[i] is the distribution after tokens[i]
// alone. This isolates the matrix-product numerics (llama.cpp's activation rounding) from the
// chaotic growth of rounding differences over a long context.
//
// Output (stdout, one JSON object):
//   {"tokens": [ids evaluated], "add_bos": bool, "n_vocab": n, "first": j0,
//    "positions": [{"ids": [k ids, most probable first], "logp": [k natural-log probs], "tail": p_rest}]}
// positions[i] is the distribution after tokens[0..=first+i].
import { fail, openModel, CONTEXT_DEFAULTS } from "./_llama.mjs";
import { readFileSync } from "node:fs";

const usage = "usage: node distributions.mjs MODEL TEXT_FILE [--n-tokens 512] [--top-k 64] [--first 0]";
const pos = [];
const opt = { nTokens: 512, topK: 64, first: 0, single: false, contextSize: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
        const v = argv[++i];
        if (v == null || !/^\d+$/.test(v)) fail(2, `error: ${a} needs a non-negative integer\n${usage}`);
        return Number(v);
    };
    if (a === "--n-tokens") opt.nTokens = num();
    else if (a === "--top-k") opt.topK = num();
    else if (a === "--first") opt.first = num();
    else if (a === "--single") opt.single = true;
    else if (a === "--context-size") opt.contextSize = num();
    else if (a.startsWith("--")) fail(2, `error: unknown option ${a}\n${usage}`);
    else pos.push(a);
}
if (pos.length !== 2 || opt.nTokens < 1 || opt.topK < 1) fail(2, usage);

async function main() {
    let text;
    try {
        text = readFileSync(pos[1], "utf8");
    } catch (e) {
        fail(2, `error: cannot read ${pos[1]}: ${e?.message ?? e}`);
    }
    if (text.endsWith("\n")) text = text.slice(0, -1);
    const { llama, model } = await openModel(pos[0]);
    const bos = model.tokens.bos;
    const addBos = model.tokens.shouldPrependBosToken && bos != null;
    const textTokens = model.tokenize(text);
    let tokens = addBos ? [bos, ...textTokens] : Array.from(textTokens);
    if (tokens.length < opt.nTokens) throw new Error(`the text gives only ${tokens.length} tokens`);
    tokens = tokens.slice(0, opt.nTokens);
    if (addBos) tokens[0] = bos;
    const n = tokens.length;
    // At least one slot more than the tokens: with exactly n slots node-llama-cpp keeps a cell
    // free and decodes the last token after a context shift, so the last distribution does not
    // come from the full context. --context-size asks for more.
    const context = await model.createContext({ contextSize: Math.max(n + 1, 64, opt.contextSize), threads: 1, sequences: 1, ...CONTEXT_DEFAULTS });
    const seq = context.getSequence();
    const positions = new Array(n).fill(null);
    let nVocab = 0;
    let cbError = null;
    const onTokenResult = (j, output) => {
        try {
            const probs = output?.next?.probabilities;
            if (!(probs instanceof Map)) throw new Error(`no probabilities at position ${j}`);
            nVocab = Math.max(nVocab, probs.size);
            let sum = 0;
            for (const p of probs.values()) sum += p;
            if (!(Math.abs(sum - 1) <= 1e-2)) throw new Error(`position ${j}: probabilities sum to ${sum}`);
            // top-k by a partial selection: keep a sorted array of the k best
            const k = opt.topK;
            const ids = [];
            const ps = [];
            for (const [tok, p] of probs) {
                if (ps.length === k && p <= ps[k - 1]) continue;
                let at = ps.length;
                while (at > 0 && ps[at - 1] < p) at--;
                ids.splice(at, 0, tok);
                ps.splice(at, 0, p);
                if (ps.length > k) { ids.pop(); ps.pop(); }
            }
            let top = 0;
            for (const p of ps) top += p;
            positions[j] = {
                ids,
                logp: ps.map((p) => Math.log(p) - Math.log(sum)),
                tail: Math.max(0, 1 - top / sum),
            };
        } catch (e) {
            cbError ??= e;
        } finally {
            if (output?.next != null) output.next.probabilities = undefined;
        }
    };
    if (opt.single) {
        for (let k = 0; k < n; k++) {
            await seq.clearHistory();
            await seq.controlledEvaluate([[tokens[k], { generateNext: { probabilities: true } }]], {
                onTokenResult: (_j, output) => onTokenResult(k, output),
            });
            if (cbError != null) throw cbError;
        }
    } else {
        const input = tokens.map((t, k) => (k >= opt.first ? [t, { generateNext: { probabilities: true } }] : t));
        await seq.controlledEvaluate(input, { onTokenResult });
    }
    if (cbError != null) throw cbError;
    const out = positions.slice(opt.first);
    if (out.some((p) => p == null)) throw new Error("missing positions");
    await context.dispose();
    await model.dispose();
    await llama.dispose();
    const result = { tokens, add_bos: addBos, n_vocab: nVocab, first: opt.first, single: opt.single, positions: out };
    await new Promise((res) => process.stdout.write(JSON.stringify(result) + "\n", res));
}

try {
    await main();
    process.exit(0);
} catch (e) {
    await new Promise((r) => setTimeout(r, 200));
    fail(e?.exitCode ?? 1, `error: ${e?.message ?? e}`);
}

#!/usr/bin/env node
// Perplexity through real llama.cpp (node-llama-cpp 3.21.1 prebuilt, CPU, 1 thread), following
// llama.cpp's `llama-perplexity` (tools/perplexity/perplexity.cpp @80fb11ac, perplexity()) step by step.
//
// Usage: node tests/oracle/perplexity.mjs MODEL TEXT_FILE [--ctx 512] [--chunks N] [--max-tokens T]
//                                         [--dump-logprobs OUT.bin] [--top1 OUT.json] [--threads 1]
//
// Method (as llama-perplexity):
// - The text is read as UTF-8 and one trailing "\n" is dropped (what llama.cpp's `-f` does; a "\r"
//   before it stays). It is tokenized once, without parsing special tokens, with BOS prepended only if
//   the vocabulary asks for it (tokenizer.ggml.add_bos_token, llama_vocab_get_add_bos). Windows line
//   endings are kept as they are (llama.cpp reads the bytes unchanged on Linux).
// - --max-tokens T keeps the first T tokens of that tokenization (BOS included). The whole text is
//   always tokenized (0.6 s for the 1.29 MB wiki.test.raw), so the tokens are exactly llama-perplexity's.
// - Chunks are consecutive non-overlapping windows of ctx tokens; n_chunks = min(N, floor(n_tokens/ctx)).
//   llama-perplexity refuses fewer than 2*ctx tokens; here a single chunk is allowed (warning on stderr).
// - Each chunk is evaluated from an empty KV cache, its first token replaced by BOS if the vocabulary
//   adds BOS. Only the second half is scored: for j = ctx/2 .. ctx-2, -log p(token[j+1] | tokens[..=j]),
//   i.e. ctx/2 - 1 predictions per chunk (255 for ctx 512).
// - Probabilities: node-llama-cpp has no raw-logits API. seq.controlledEvaluate() with
//   generateNext.probabilities returns the full-vocabulary softmax (temperature 0 = greedy sampler,
//   which leaves the logits alone) as a Map, requested here only at the scored positions. The addon
//   normalizes with a float32 sum, which can be off by ~1e-3; each map is therefore re-normalized with
//   a float64 sum (equivalent to llama.cpp's log_softmax with its double sum_exp), and a map whose sum
//   is off by more than 1e-2 (or that lacks the target token) is an error.
//
// Output: stderr gets llama-perplexity's running line "[1]12.5608,[2]21.2755,..." (one entry per chunk)
// plus a few info lines; stdout gets one JSON object at the end:
//   {"ppl", "ppl_err", "nll_mean", "scored", "tokens", "chunks", "ctx", "running": [ppl after chunk 1..],
//    "add_bos", "seconds", "entropy_mean" (mean entropy in nats of the scored next-token distributions), ...}
// --entropy-only: for models that are not language models (synthetic weights): a next token with
//   p = 0 is allowed (PPL then comes out infinite); only entropy_mean and top1 are meaningful.
// ppl_err is llama-perplexity's "+/-": ppl * sqrt((mean(nll^2) - mean(nll)^2) / (scored - 1)).
// --dump-logprobs OUT.bin: float64 little-endian log p(actual next token), one per scored position, in order.
// --top1 OUT.json: JSON array of the argmax token id at each scored position (same order).
//
// node-llama-cpp is resolved from $DYNQUANT_NODE_DIR (default: <repo>/oracle-node).
// Exit codes: 0 ok, 1 model load / evaluation failure (message on stderr), 2 usage error.
import { fail, openModel, CONTEXT_DEFAULTS } from "./_llama.mjs";
import { readFileSync, writeFileSync } from "node:fs";

const usage =
    "usage: node perplexity.mjs MODEL TEXT_FILE [--ctx 512] [--chunks N] [--max-tokens T] " +
    "[--dump-logprobs OUT.bin] [--top1 OUT.json] [--entropy-only] [--threads N]";

function parseArgs(argv) {
    const pos = [];
    const opt = { ctx: 512, chunks: null, maxTokens: null, dumpLogprobs: null, top1: null, entropyOnly: false };
    const intOpt = (name, v, min) => {
        const n = Number(v);
        if (v == null || !/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min)
            fail(2, `error: ${name} needs an integer >= ${min}\n${usage}`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const [key, inline] = a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
        const val = () => (inline !== undefined ? inline : argv[++i]);
        switch (key) {
            case "--ctx": opt.ctx = intOpt("--ctx", val(), 4); break;
            case "--chunks": opt.chunks = intOpt("--chunks", val(), 1); break;
            case "--max-tokens": opt.maxTokens = intOpt("--max-tokens", val(), 1); break;
            case "--dump-logprobs": opt.dumpLogprobs = val(); if (!opt.dumpLogprobs) fail(2, usage); break;
            case "--top1": opt.top1 = val(); if (!opt.top1) fail(2, usage); break;
            case "--entropy-only": opt.entropyOnly = true; break;
            case "--threads": opt.threads = intOpt("--threads", val(), 1); break;
            case "-h": case "--help": process.stdout.write(usage + "\n"); process.exit(0);
            default:
                if (a.startsWith("--")) fail(2, `error: unknown option ${a}\n${usage}`);
                pos.push(a);
        }
    }
    if (pos.length !== 2) fail(2, usage);
    if (opt.ctx % 2 !== 0) fail(2, `error: --ctx must be even\n${usage}`);
    return { modelPath: pos[0], textPath: pos[1], ...opt };
}

const args = parseArgs(process.argv.slice(2));


function info(msg) {
    process.stderr.write(`perplexity: ${msg}\n`);
}

async function main() {
    const t0 = performance.now();
    let text;
    try {
        text = readFileSync(args.textPath, "utf8");
    } catch (e) {
        fail(2, `error: cannot read ${args.textPath}: ${e?.message ?? e}`);
    }
    if (text.endsWith("\n")) text = text.slice(0, -1); // llama.cpp's -f drops one trailing newline

    const { llama, model } = await openModel(args.modelPath, {}, args.threads ?? 1);
    const ctx = args.ctx;
    const bos = model.tokens.bos;
    const addBos = model.tokens.shouldPrependBosToken && bos != null;
    if (model.tokens.shouldAppendEosToken)
        info("warning: the vocabulary adds EOS (llama-perplexity asserts it does not); no EOS is added here");

    // The whole text is tokenized once, as llama-perplexity does (native tokenizer: ~0.6 s for the
    // 1.29 MB wiki.test.raw, so no prefix shortcut is needed; BPE of a prefix can differ at the cut).
    const tTok0 = performance.now();
    const textTokens = model.tokenize(text);
    const tokenizeSeconds = (performance.now() - tTok0) / 1000;
    let tokens = addBos ? [bos, ...textTokens] : Array.from(textTokens);
    info(`tokenized ${text.length} chars into ${tokens.length} tokens${addBos ? " (BOS prepended)" : ""} ` +
        `in ${(tokenizeSeconds * 1000).toFixed(0)} ms`);
    if (args.maxTokens != null && tokens.length > args.maxTokens) tokens = tokens.slice(0, args.maxTokens);

    const nChunkMax = Math.floor(tokens.length / ctx);
    const nChunks = args.chunks == null ? nChunkMax : Math.min(args.chunks, nChunkMax);
    if (nChunks < 1)
        throw new Error(`need at least ${ctx} tokens for one chunk of --ctx ${ctx}; the text gives ${tokens.length}`);
    if (tokens.length < 2 * ctx)
        info(`warning: ${tokens.length} tokens < 2*ctx; llama-perplexity would refuse this input`);
    const first = ctx / 2;
    info(`calculating perplexity over ${nChunks} chunks, n_ctx=${ctx}, add_bos=${addBos}`);

    const context = await model.createContext({ contextSize: ctx, threads: args.threads ?? 1, sequences: 1, ...CONTEXT_DEFAULTS });
    const seq = context.getSequence();

    const logprobs = [];
    const top1 = [];
    const running = [];
    let nll = 0;
    let nll2 = 0;
    let entropy = 0;
    let count = 0;
    let maxSumDev = 0;
    const tEval0 = performance.now();
    for (let i = 0; i < nChunks; i++) {
        const start = i * ctx;
        const chunk = tokens.slice(start, start + ctx);
        if (addBos) chunk[0] = bos;
        await seq.clearHistory();
        const input = chunk.map((t, k) => (k >= first && k <= ctx - 2 ? [t, { generateNext: { probabilities: true } }] : t));
        // Each probability Map (49k entries for SmolLM2) is reduced as soon as it is made, in
        // onTokenResult, and then dropped, so at most a few are alive at once.
        const chunkLp = new Float64Array(ctx).fill(NaN);
        const chunkTop = new Int32Array(ctx).fill(-1);
        const chunkEnt = new Float64Array(ctx).fill(NaN);
        let cbError = null;
        const onTokenResult = (j, output) => {
            try {
                const probs = output?.next?.probabilities;
                if (!(probs instanceof Map)) throw new Error(`no probabilities at position ${j}`);
                const target = chunk[j + 1];
                let sum = 0;
                let plogp = 0;
                let best = -1;
                let bestP = -1;
                for (const [tok, p] of probs) {
                    sum += p;
                    if (p > 0) plogp += p * Math.log(p);
                    if (p > bestP) { bestP = p; best = tok; }
                }
                const dev = Math.abs(sum - 1);
                if (dev > maxSumDev) maxSumDev = dev;
                if (!(dev <= 1e-2)) throw new Error(`position ${j}: probabilities sum to ${sum}`);
                const p = probs.get(target);
                if (args.entropyOnly) {
                    // The text's next token may underflow to p = 0 in a random model: skip it.
                    chunkLp[j] = p > 0 ? Math.log(p) - Math.log(sum) : -Infinity;
                } else {
                    if (p == null) throw new Error(`position ${j}: token ${target} missing from the probabilities`);
                    if (!(p > 0)) throw new Error(`position ${j}: p(token ${target}) = ${p} (float32 underflow)`);
                    chunkLp[j] = Math.log(p) - Math.log(sum);
                }
                chunkTop[j] = best;
                // Entropy of the renormalized distribution: log(sum) - sum(p log p) / sum.
                chunkEnt[j] = Math.log(sum) - plogp / sum;
            } catch (e) {
                cbError ??= e;
            } finally {
                if (output?.next != null) output.next.probabilities = undefined;
            }
        };
        await seq.controlledEvaluate(input, { onTokenResult });
        if (cbError != null) throw new Error(`chunk ${i + 1}: ${cbError.message}`);
        for (let j = first; j <= ctx - 2; j++) {
            const lp = chunkLp[j];
            if (Number.isNaN(lp)) throw new Error(`chunk ${i + 1}: no result for position ${j}`);
            logprobs.push(lp);
            top1.push(chunkTop[j]);
            entropy += chunkEnt[j];
            nll -= lp;
            nll2 += lp * lp;
            count++;
        }
        const ppl = Math.exp(nll / count);
        running.push(ppl);
        process.stderr.write(`[${i + 1}]${ppl.toFixed(4)},`);
    }
    process.stderr.write("\n");
    const evalSeconds = (performance.now() - tEval0) / 1000;

    const nllMean = nll / count;
    const ppl = Math.exp(nllMean);
    const var_ = nll2 / count - nllMean * nllMean;
    const pplErr = var_ > 0 && count > 1 ? ppl * Math.sqrt(var_ / (count - 1)) : null;
    info(`Final estimate: PPL = ${ppl.toFixed(4)} +/- ${pplErr == null ? "n/a" : pplErr.toFixed(5)}` +
        ` (${count} scored, eval ${evalSeconds.toFixed(1)} s, max |sum(p)-1| = ${maxSumDev.toExponential(2)})`);

    if (args.dumpLogprobs != null) {
        const buf = Buffer.alloc(8 * logprobs.length);
        logprobs.forEach((v, k) => buf.writeDoubleLE(v, 8 * k));
        writeFileSync(args.dumpLogprobs, buf);
    }
    if (args.top1 != null) writeFileSync(args.top1, JSON.stringify(top1) + "\n");

    await context.dispose();
    await model.dispose();
    await llama.dispose();

    const result = {
        ppl,
        ppl_err: pplErr,
        nll_mean: nllMean,
        scored: count,
        tokens: tokens.length,
        chunks: nChunks,
        ctx,
        running,
        add_bos: addBos,
        seconds: (performance.now() - t0) / 1000,
        eval_seconds: evalSeconds,
        tokenize_seconds: tokenizeSeconds,
        max_prob_sum_dev: maxSumDev,
        entropy_mean: entropy / count,
    };
    await new Promise((res) => process.stdout.write(JSON.stringify(result) + "\n", res));
}

try {
    await main();
    process.exit(0);
} catch (e) {
    await new Promise((r) => setTimeout(r, 200));
    fail(e?.exitCode ?? 1, `error: ${e?.message ?? e}`);
}

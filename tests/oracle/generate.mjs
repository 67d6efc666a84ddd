#!/usr/bin/env node
// Greedy generation through real llama.cpp (node-llama-cpp 3.21.1 prebuilt, CPU, 1 thread).
//
// Usage: node tests/oracle/generate.mjs MODEL_PATH N_TOKENS PROMPT...
//
// For each prompt prints one JSON line on stdout:
//   {"prompt": str, "prompt_tokens": [ids...], "tokens": [ids...], "text": str, "stop": "n_tokens"|"eog"}
// - prompt_tokens: what was evaluated: model.tokenize(prompt) (no special-token parsing), with the
//   BOS token prepended when the model asks for it (tokenizer.ggml.add_bos_token, as llama.cpp does).
// - tokens: N_TOKENS greedily sampled ids (temperature 0, no penalties). If an end-of-generation
//   token comes first it is included and generation stops there (stop = "eog").
// - text: model.detokenize(tokens).
// Each prompt starts from an empty KV cache (the sequence's history is cleared).
//
// node-llama-cpp is resolved from $DYNQUANT_NODE_DIR (default: <repo>/oracle-node), so the script
// can be run from any directory. llama.cpp logs (warnings and errors) go to stderr.
// Exit codes: 0 ok, 1 model load / generation failure (message on stderr), 2 usage error.
import { fail, openModel, CONTEXT_DEFAULTS } from "./_llama.mjs";

const usage = "usage: node generate.mjs MODEL_PATH N_TOKENS PROMPT...";

const [modelPath, nArg, ...prompts] = process.argv.slice(2);
const nTokens = Number(nArg);
if (!modelPath || !Number.isInteger(nTokens) || nTokens < 0 || prompts.length === 0)
    fail(2, usage);


function writeLine(obj) {
    return new Promise((res) => process.stdout.write(JSON.stringify(obj) + "\n", res));
}

async function main() {
    const { llama, model } = await openModel(modelPath);
    const context = await model.createContext({ contextSize: 512, threads: 1, ...CONTEXT_DEFAULTS });
    const seq = context.getSequence();
    const bos = model.tokens.bos;
    const addBos = model.tokens.shouldPrependBosToken && bos != null;

    for (const prompt of prompts) {
        await seq.clearHistory();
        const promptTokens = model.tokenize(prompt);
        if (addBos && promptTokens[0] !== bos) promptTokens.unshift(bos);
        const tokens = [];
        let stop = "n_tokens";
        if (nTokens > 0) {
            for await (const tok of seq.evaluate(promptTokens, { temperature: 0, yieldEogToken: true })) {
                tokens.push(tok);
                if (model.isEogToken(tok)) { stop = "eog"; break; }
                if (tokens.length >= nTokens) break;
            }
        }
        await writeLine({
            prompt,
            prompt_tokens: promptTokens,
            tokens,
            text: model.detokenize(tokens),
            stop,
        });
    }
    await context.dispose();
    await model.dispose();
    await llama.dispose();
}

try {
    await main();
    process.exit(0);
} catch (e) {
    // llama.cpp's log lines (e.g. "tensor ... data is not within the file bounds") reach the logger
    // asynchronously; give them a moment to arrive before exiting.
    await new Promise((r) => setTimeout(r, 200));
    fail(1, `error: ${e?.message ?? e}`);
}

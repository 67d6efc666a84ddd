// Shared by the node oracle scripts: resolves node-llama-cpp from $DYNQUANT_NODE_DIR (default:
// <repo>/oracle-node), so the scripts run from any directory, and reports usage-level failures.
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** Writes `msg` to stderr and exits with `code`. */
export function fail(code, msg) {
    process.stderr.write(msg.endsWith("\n") ? msg : msg + "\n");
    process.exit(code);
}

/** node-llama-cpp's `getLlama`, or exit 2 with a hint when it is not installed. */
export async function loadGetLlama() {
    const here = dirname(fileURLToPath(import.meta.url));
    const nodeDir = resolve(process.env.DYNQUANT_NODE_DIR || join(here, "..", "..", "oracle-node"));
    try {
        const entry = createRequire(join(nodeDir, "package.json")).resolve("node-llama-cpp");
        return (await import(pathToFileURL(entry).href)).getLlama;
    } catch (e) {
        fail(2, `error: cannot load node-llama-cpp from ${nodeDir} (run scripts/prepare-oracles.sh): ${e?.message ?? e}`);
    }
}

/**
 * Options every oracle context takes: flash attention left to llama.cpp ("auto", its own default
 * in llama-cli, llama-perplexity and llama-server, which turns it on for the CPU). Without this,
 * node-llama-cpp switches it off for models whose key and value heads differ in size (its copy of
 * an old llama.cpp rule: deepseek2's MLA, 192/128 and 320/256), and llama.cpp then takes its other
 * attention path (f16-rounded softmax weights times a transposed value cache), which no llama.cpp
 * tool uses by default on these models.
 */
export const CONTEXT_DEFAULTS = Object.freeze({ flashAttention: "auto" });

/**
 * Real llama.cpp on the CPU with one thread (more threads spin against each other on small
 * machines), warnings and errors to stderr, and the model at `modelPath` loaded. A model that
 * fails to load throws an Error with exitCode 1. `options` are extra `loadModel` options (e.g.
 * `{ vocabOnly: true }`). `maxThreads` caps every context of this llama instance: a context's
 * own `threads` option above it is silently lowered to it, so a speed run on N threads must
 * open the model with `maxThreads` N.
 */
export async function openModel(modelPath, options = {}, maxThreads = 1) {
    const getLlama = await loadGetLlama();
    const llama = await getLlama({
        gpu: false,
        build: "never",
        maxThreads,
        logLevel: "warn",
        logger: (level, message) => process.stderr.write(`[llama.cpp ${level}] ${message.endsWith("\n") ? message : message + "\n"}`),
    });
    try {
        const model = await llama.loadModel({ modelPath: resolve(modelPath), ...options });
        return { llama, model };
    } catch (e) {
        const err = new Error(`failed to load model ${modelPath}: ${e?.message ?? e}`);
        err.exitCode = 1;
        throw err;
    }
}

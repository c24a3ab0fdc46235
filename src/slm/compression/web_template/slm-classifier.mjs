// slm-classifier.mjs: classify text in the browser with a bundle exported by `slm export BUNDLE --target web`.
//
// Nothing leaves the page: the tokenizer (@huggingface/tokenizers, reproducing the bundle's tokenizer.json) and
// the model (onnxruntime-web on WebAssembly, or the static tier's embedding table in plain JavaScript) run here.
//
//   import { load } from "./slm-classifier.mjs";
//   const classifier = await load("./");            // the folder's URL: model.json, tokenizer.json, the model
//   const [result] = await classifier.classify(["my card has not arrived"]);
//   result.label, result.score, result.probabilities  // {label: probability} for every label
//
// What it computes is slm.runtime's prediction (src/slm/runtime): the same text cut, tokenization, truncation,
// batching by length, softmax (single-label) or sigmoids and per-label thresholds (multi-label).
import { Tokenizer } from "./vendor/tokenizers/tokenizers.min.mjs";

export const FORMAT = "slm-web";
export const FORMAT_VERSION = 1;
// Padding tokens a batch may carry before a longer text is run in a batch of its own (slm.runtime.onnx).
const PAD_BUDGET_TOKENS = 16;
// Whitespace as Python's str.isspace() sees it: slm.bundle.textlimit counts non-whitespace characters.
const PY_SPACE = /[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

/**
 * Load an exported folder.
 * @param {string|URL} base the folder's URL (default: the folder this module was loaded from).
 * @param {{numThreads?: number, fetch?: Function}} options numThreads: WebAssembly threads for the ONNX model
 *   (used only when the page is cross-origin isolated; default: half the logical cores, at most 4);
 *   fetch: how files are read (default: the global fetch).
 * @returns {Promise<Classifier>}
 */
export async function load(base = new URL("./", import.meta.url), options = {}) {
  const root = folderUrl(base);
  const get = options.fetch ?? ((url) => globalThis.fetch(url));
  const read = async (name) => {
    const response = await get(new URL(name, root));
    if (!response.ok) throw new Error(`cannot load ${new URL(name, root)}: HTTP ${response.status}`);
    return response;
  };
  const config = await (await read("model.json")).json();
  if (config.format !== FORMAT || config.format_version > FORMAT_VERSION) {
    throw new Error(`${root}model.json is not an slm web export this module reads (format ${config.format})`);
  }
  const encoder = createEncoder(config, await (await read(config.tokenizer)).json());
  const scorer = config.kind === "static" ? await staticScorer(config, read) : await onnxScorer(config, read, options);
  return new Classifier(config, encoder, scorer);
}

/** A loaded model: `classify(texts)` and the facts the demo page shows. */
export class Classifier {
  constructor(config, encoder, scorer) {
    this.config = config;
    this.labels = config.labels;
    this.multiLabel = config.task === "multi_label";
    this.kind = config.kind;
    this.threads = scorer.threads;
    this.encoder = encoder;
    this.scorer = scorer;
  }

  /**
   * One result per text, in order: {label, score, probabilities}. `label` is the most probable label
   * (multi-label: the list of labels whose probability reaches its threshold), `score` its probability
   * (multi-label: the highest), `probabilities` every label's probability rounded to 6 digits, as slm predict.
   * @param {string[]} texts
   */
  async classify(texts) {
    const rows = await this.probabilities(texts);
    return rows.map((row) => decode(row, this.labels, this.multiLabel ? this.config.thresholds : null));
  }

  /** Probabilities, one Float32Array per text in `labels` order (unrounded). */
  async probabilities(texts) {
    const ids = this.tokenize(texts);
    return this.scorer.probabilities(ids, this.multiLabel);
  }

  /** The token ids the model reads for each text (after the text cut and truncation). */
  tokenize(texts) {
    if (typeof texts === "string" || !texts || typeof texts[Symbol.iterator] !== "function") {
      throw new TypeError("classify() takes a list of texts");
    }
    return Array.from(texts, (text) => this.encoder.encode(String(text)));
  }
}

// ---------------------------------------------------------------- tokenization

/** The ids slm.runtime feeds its model for one text: a synchronous {encode(text) -> number[]}. */
export function createEncoder(config, tokenizerJson) {
  const tokenizer = new Tokenizer(tokenizerJson, {});
  const limit = config.text_limit;
  if (config.kind === "static") {
    // slm.runtime.static: model2vec's character cut, no special tokens, truncation, unknown tokens dropped.
    const s = config.static;
    const chars = s.max_length === null ? null : s.max_length * s.median_token_length;
    return {
      tokenizer,
      encode(text) {
        let cut = cutText(text, limit);
        if (chars !== null) cut = codePoints(cut, chars);
        let ids = tokenizer.encode(cut, { add_special_tokens: false }).ids;
        if (s.max_length !== null && ids.length > s.max_length) ids = ids.slice(0, s.max_length);
        return s.unk_id === null ? ids : ids.filter((id) => id !== s.unk_id);
      },
    };
  }
  // slm.runtime.onnx: truncation to max_length counting the special tokens, as the Python tokenizers library.
  const [prefix, suffix] = specialTokens(tokenizer);
  const room = Math.max(config.onnx.max_length - prefix.length - suffix.length, 0);
  return {
    tokenizer,
    encode(text) {
      const ids = tokenizer.encode(cutText(text, limit), { add_special_tokens: false }).ids;
      return prefix.concat(ids.length > room ? ids.slice(0, room) : ids, suffix);
    },
  };
}

/** The ids the post-processor puts before and after a single sequence ([CLS] ... [SEP] for BERT). */
function specialTokens(tokenizer) {
  if (!tokenizer.post_processor) return [[], []];
  const marker = "\u0000slm-sequence\u0000";
  const tokens = tokenizer.post_processor([marker], null, true).tokens;
  const at = tokens.indexOf(marker);
  const id = (token) => {
    const found = tokenizer.token_to_id(token);
    if (found === undefined) throw new Error(`special token ${token} is not in the vocabulary`);
    return found;
  };
  return [tokens.slice(0, at).map(id), tokens.slice(at + 1).map(id)];
}

/** slm.bundle.textlimit.cut_text: the text up to its `limit`-th non-whitespace character (code points). */
export function cutText(text, limit) {
  if (text.length <= limit) return text; // UTF-16 length >= code points: nothing to cut
  const cap = 4 * limit;
  let seen = 0;
  let position = 0; // code points read
  let offset = 0; // UTF-16 index of `position`
  for (const ch of text) {
    if (position >= cap) break;
    if (!PY_SPACE.test(ch)) {
      seen += 1;
      if (seen >= limit) return text.slice(0, offset + ch.length);
    }
    position += 1;
    offset += ch.length;
  }
  return text.slice(0, offset);
}

/** The first `n` code points of `text` (Python's text[:n]). */
export function codePoints(text, n) {
  if (text.length <= n) return text;
  let count = 0;
  let offset = 0;
  for (const ch of text) {
    if (count === n) break;
    count += 1;
    offset += ch.length;
  }
  return text.slice(0, offset);
}

// ---------------------------------------------------------------- the ONNX model (onnxruntime-web)

async function onnxScorer(config, read, options) {
  const ort = await import("./vendor/onnxruntime-web/ort.wasm.min.mjs");
  const isolated = globalThis.crossOriginIsolated === true;
  // Threads need SharedArrayBuffer, which a browser gives only to a cross-origin isolated page (COOP/COEP).
  const threads = isolated ? Math.max(1, Math.floor(options.numThreads ?? defaultThreads())) : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = "error";
  const bytes = new Uint8Array(await (await read(config.onnx.file)).arrayBuffer());
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  const inputs = new Set(session.inputNames);
  const output = config.onnx.output;
  const batchSize = config.onnx.batch_size;
  return {
    threads,
    session,
    async probabilities(ids, multiLabel) {
      const out = new Array(ids.length);
      const order = ids.map((_, i) => i).sort((a, b) => ids[a].length - ids[b].length || a - b);
      for (const [start, end] of lengthChunks(order.map((i) => ids[i].length), batchSize)) {
        const rows = order.slice(start, end);
        const logits = await runBatch(ort, session, inputs, output, rows.map((i) => ids[i]), config.onnx.pad_id);
        const width = logits.length / rows.length;
        rows.forEach((row, r) => {
          out[row] = activate(logits.subarray(r * width, (r + 1) * width), multiLabel);
        });
      }
      return out;
    },
  };
}

/**
 * onnxruntime-web's own rule: half the logical cores (one per physical core), at most 4. The page's main
 * thread takes part in every run, so more threads than cores only wait for each other (bench/web.py: on a
 * shared 2-core machine 2 threads gave a worse batch-1 p50 than 1).
 */
function defaultThreads() {
  return Math.min(4, Math.ceil((globalThis.navigator?.hardwareConcurrency ?? 1) / 2));
}

async function runBatch(ort, session, inputs, output, batch, padId) {
  const width = Math.max(...batch.map((row) => row.length));
  const idsData = new BigInt64Array(batch.length * width).fill(BigInt(padId));
  const maskData = new BigInt64Array(batch.length * width);
  batch.forEach((row, r) => {
    row.forEach((id, c) => {
      idsData[r * width + c] = BigInt(id);
      maskData[r * width + c] = 1n;
    });
  });
  const dims = [batch.length, width];
  const feeds = {
    input_ids: new ort.Tensor("int64", idsData, dims),
    attention_mask: new ort.Tensor("int64", maskData, dims),
  };
  if (inputs.has("token_type_ids")) feeds.token_type_ids = new ort.Tensor("int64", new BigInt64Array(idsData.length), dims);
  const result = await session.run(feeds);
  const logits = result[output].data;
  for (const tensor of Object.values(feeds)) tensor.dispose?.();
  return logits;
}

/** slm.runtime.onnx.length_chunks: runs of ascending lengths, at most `batchSize` and PAD_BUDGET_TOKENS padding. */
export function lengthChunks(lengths, batchSize) {
  const chunks = [];
  let start = 0;
  let total = 0;
  lengths.forEach((length, i) => {
    const count = i - start;
    if (count && (count >= batchSize || (count + 1) * length - (total + length) > PAD_BUDGET_TOKENS)) {
      chunks.push([start, i]);
      start = i;
      total = 0;
    }
    total += length;
  });
  if (start < lengths.length) chunks.push([start, lengths.length]);
  return chunks;
}

// ---------------------------------------------------------------- the static tier (plain JavaScript)

async function staticScorer(config, read) {
  const s = config.static;
  const buffer = await (await read(s.file)).arrayBuffer();
  const table = toFloat32(buffer, s.embeddings);
  const weight = toFloat32(buffer, s.weight);
  const bias = toFloat32(buffer, s.bias);
  const dim = s.dims;
  const k = bias.length;
  return {
    threads: 1,
    async probabilities(ids, multiLabel) {
      const mean = new Float32Array(dim);
      const logits = new Float64Array(k);
      return ids.map((row) => {
        // slm.runtime.static: the mean of the tokens' vectors (zeros for none), L2-normalised when configured.
        mean.fill(0);
        for (const id of row) {
          const base = id * dim;
          for (let d = 0; d < dim; d++) mean[d] += table[base + d];
        }
        const count = Math.max(row.length, 1);
        let norm = 0;
        for (let d = 0; d < dim; d++) {
          mean[d] /= count;
          norm += mean[d] * mean[d];
        }
        if (s.normalize) {
          const scale = Math.sqrt(norm) + 1e-32;
          for (let d = 0; d < dim; d++) mean[d] /= scale;
        }
        for (let c = 0; c < k; c++) {
          let sum = 0;
          const base = c * dim;
          for (let d = 0; d < dim; d++) sum += weight[base + d] * mean[d];
          logits[c] = sum + bias[c];
        }
        return activate(logits, multiLabel);
      });
    },
  };
}

/** A float32 or float16 (little-endian) array of static.bin as a Float32Array. */
function toFloat32(buffer, { dtype, offset, count }) {
  if (dtype === "float32") return new Float32Array(buffer, offset, count);
  if (dtype !== "float16") throw new Error(`static.bin: unsupported dtype ${dtype}`);
  const half = new Uint16Array(buffer, offset, count);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = halfToFloat(half[i]);
  return out;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

// ---------------------------------------------------------------- probabilities and labels

/** slm.models.ensemble.probabilities: softmax (single-label) or sigmoids (multi-label), in float64. */
function activate(logits, multiLabel) {
  const out = new Float32Array(logits.length);
  if (multiLabel) {
    for (let i = 0; i < logits.length; i++) out[i] = 1 / (1 + Math.exp(-logits[i]));
    return out;
  }
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  const exp = Array.from(logits, (v) => {
    const e = Math.exp(v - max);
    sum += e;
    return e;
  });
  exp.forEach((e, i) => {
    out[i] = e / sum;
  });
  return out;
}

/** slm.bundle.predictions.decode for one row. */
function decode(row, labels, thresholds) {
  const probabilities = {};
  labels.forEach((label, i) => {
    probabilities[label] = Math.round(row[i] * 1e6) / 1e6;
  });
  let top = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[top]) top = i;
  if (thresholds === null) return { label: labels[top], score: row[top], probabilities };
  const chosen = labels.filter((_, i) => row[i] >= thresholds[i]);
  return { label: chosen, score: row[top], probabilities };
}

function folderUrl(base) {
  const where = globalThis.location?.href ?? import.meta.url;
  const url = new URL(base, where);
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}

// Used by `slm export --target web` (slm/compression/web.py), not copied into the export: runs the exported
// folder's own slm-classifier.mjs in node on the texts given as a JSON list on stdin, and prints the token ids
// and probabilities as JSON, for slm to compare with slm.runtime before the folder is written.
//   node check.mjs FOLDER < texts.json
import { readFile } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import process from "node:process";

const folder = pathToFileURL(process.argv[2].endsWith("/") ? process.argv[2] : `${process.argv[2]}/`);
const { load } = await import(new URL("slm-classifier.mjs", folder).href);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const texts = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const fetchFile = async (url) => new Response(await readFile(fileURLToPath(url)));
const classifier = await load(folder, { fetch: fetchFile });
const ids = classifier.tokenize(texts);
const probabilities = (await classifier.probabilities(texts)).map((row) => Array.from(row));
process.stdout.write(JSON.stringify({ ids, probabilities, node: process.version }));

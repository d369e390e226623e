// Sentence embeddings of a release folder by transformers.js, offline: the folder is the local model, and the
// pooling and normalisation are the ones its sentence-transformers modules state (1_Pooling, Normalize).
// node tests/js/embed.mjs <release folder> <dtype: fp32 | q8> <sentences.json> <out.json>
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { env, pipeline } from "@huggingface/transformers";

const [folder, dtype, sentencesFile, outFile] = process.argv.slice(2);
const release = path.resolve(folder);
const read = (name) => JSON.parse(readFileSync(path.join(release, name), "utf8"));

// sentence-transformers 6 writes {"pooling_mode": "mean"}; earlier versions {"pooling_mode_mean_tokens": true}
const modules = read("modules.json");
const stated = read(path.join(modules.find((m) => m.type.endsWith("Pooling")).path, "config.json"));
const mode = stated.pooling_mode ?? (stated.pooling_mode_cls_token ? "cls" : stated.pooling_mode_mean_tokens ? "mean" : "");
if (!["mean", "cls"].includes(mode)) throw new Error(`${release}: pooling ${JSON.stringify(stated)} is not mean or cls`);
const normalize = modules.some((m) => m.type.endsWith("Normalize"));

env.allowRemoteModels = false; // nothing from the Hub: the release folder is the model
env.localModelPath = path.dirname(release);
const extractor = await pipeline("feature-extraction", path.basename(release), { dtype });
const output = await extractor(JSON.parse(readFileSync(sentencesFile, "utf8")), { pooling: mode, normalize });
writeFileSync(outFile, JSON.stringify(output.tolist()));

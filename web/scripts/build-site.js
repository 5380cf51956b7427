/**
 * Build the static demo site (web/site/): the demo page, the library, onnxruntime-web's WebAssembly files
 * and the shipped models, so it works offline from any static file server. Built in a temporary folder
 * and renamed into place, so a failed build never leaves half a site.
 */
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = fileURLToPath(new URL('..', import.meta.url));
const ARTIFACTS = join(WEB, '..', 'artifacts');
const ORT = join(WEB, 'node_modules', 'onnxruntime-web', 'dist');
/** onnxruntime-web's WebAssembly build (CPU, SIMD; threads only where the page is cross-origin isolated). */
export const ORT_FILES = ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'];
/** The default model, listed first. */
const DEFAULT_MODEL = 'shakespeare';

/** Build the site into `out` (default web/site); returns the list of models it holds. */
export async function buildSite(out = join(WEB, 'site')) {
  for (const [folder, fix] of [[ORT, 'run `npm ci` in web/ first'], [ARTIFACTS, 'run it from a seqgen checkout']]) {
    if (!existsSync(folder)) throw new Error(`build-site: ${folder} is missing; ${fix}`);
  }
  const temp = `${out}.tmp-${process.pid}`;
  await rm(temp, { recursive: true, force: true });
  await cp(join(WEB, 'demo'), temp, { recursive: true });
  await cp(join(WEB, 'src'), join(temp, 'seqgen'), { recursive: true });
  await mkdir(join(temp, 'ort'));
  for (const name of ORT_FILES) await cp(join(ORT, name), join(temp, 'ort', name));
  await mkdir(join(temp, 'models'));
  const names = (await readdir(ARTIFACTS)).filter((n) => n.endsWith('.onnx')).map((n) => n.slice(0, -5));
  names.sort((a, b) => (b === DEFAULT_MODEL) - (a === DEFAULT_MODEL) || a.localeCompare(b));
  const models = [];
  for (const name of names) {
    await cp(join(ARTIFACTS, `${name}.onnx`), join(temp, 'models', `${name}.onnx`));
    models.push({ name, file: `models/${name}.onnx`, bytes: (await stat(join(ARTIFACTS, `${name}.onnx`))).size });
  }
  await writeFile(join(temp, 'models', 'models.json'), JSON.stringify(models, null, 1));
  await rm(out, { recursive: true, force: true });
  await rename(temp, out);
  return models;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const models = await buildSite(process.argv[2]).catch((error) => {
    console.error(error.message);
    process.exit(2);
  });
  console.log(`built web/site with ${models.length} models: ${models.map((m) => m.name).join(', ')}`);
}

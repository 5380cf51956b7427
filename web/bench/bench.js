/**
 * Benchmark: µs per generated character in Chromium (onnxruntime-web, WebAssembly, one thread, SIMD) beside
 * the Python runtime's own benchmark (`seqgen-run bench`) in the same run, alternating, plus the page's load
 * time and transferred bytes. Both time greedy generation from an empty prompt the same way: a 10-character
 * warm-up, then the median of 3 runs of N characters. By hand only (never in tests):
 *
 *   node bench/bench.js [--chars N] [--rounds R] [--models a,b]     (run from web/; prints JSON)
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { buildSite } from '../scripts/build-site.js';
import { serve } from '../scripts/serve.js';

const { values } = parseArgs({ options: {
  chars: { type: 'string', default: '300' }, rounds: { type: 'string', default: '2' },
  models: { type: 'string', default: 'shakespeare,shakespeare-int8' },
} });
const chars = Number(values.chars);
const rounds = Number(values.rounds);
if (!(Number.isInteger(chars) && chars >= 1 && chars <= 10_000 && Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) {
  console.error('bench: --chars must be in 1..10000 and --rounds in 1..20');
  process.exit(2);
}
const models = values.models.split(',');
const python = process.env.SEQGEN_PYTHON ?? 'python3';

/** The Python runtime's µs per character, from its own benchmark command. */
function pythonUsPerChar(model) {
  const script = 'import sys; from seqgen.cli import main; sys.exit(main())';
  const out = execFileSync(python, ['-c', script, 'bench', '--model', model, '--batch', '1', '-n', String(chars), '--json']);
  return JSON.parse(out.toString())[0].us_per_char;
}

/** A fresh page: load the library and one model; load time and the bytes the page fetched. */
async function coldLoad(browser, url, model) {
  const page = await browser.newPage();
  let bytes = 0;
  const pending = [];
  page.on('requestfinished', (request) => pending.push(request.sizes().then((s) => { bytes += s.responseBodySize + s.responseHeadersSize; })));
  const start = Date.now();
  await page.goto(url + 'api.html');
  await page.waitForFunction(() => document.body.dataset.ready);
  const modelMs = await page.evaluate(async (model) => {
    const begin = performance.now();
    window.model = await seqgen.load(`models/${model}.onnx`);
    return performance.now() - begin;
  }, model);
  const pageMs = Date.now() - start;
  await Promise.all(pending);
  return { page, bytes, pageMs, modelMs };
}

/** µs per character of greedy generation in the page, as `seqgen-run bench` times it. */
function browserUsPerChar(page) {
  return page.evaluate(async (chars) => {
    const run = async (n) => (await window.model.generate('', { maxNewChars: n, temperature: 0 })).length;
    await run(10);
    const times = [];
    let made = 0;
    for (let i = 0; i < 3; i++) {
      const start = performance.now();
      made = await run(chars);
      times.push((performance.now() - start) / made * 1000);
    }
    return times.sort((a, b) => a - b)[1];
  }, chars);
}

const folder = await mkdtemp(join(tmpdir(), 'seqgen-bench-'));
await buildSite(join(folder, 'site'));
const { server, url } = await serve(join(folder, 'site'));
const browser = await chromium.launch({ executablePath: process.env.SEQGEN_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
const results = { date: new Date().toISOString(), chars, rounds, loadavg_start: loadavg(), chromium: browser.version(), rows: [] };
try {
  for (let round = 1; round <= rounds; round++) {
    for (const model of models) {
      const { page, bytes, pageMs, modelMs } = await coldLoad(browser, url, model);
      const threads = await page.evaluate(() => ({ threads: seqgen.ort.env.wasm.numThreads, isolated: crossOriginIsolated }));
      const web = await browserUsPerChar(page);
      await page.close();
      const py = pythonUsPerChar(model);
      results.rows.push({ round, model, web_us_per_char: web, python_us_per_char: py, ratio: web / py,
        page_load_ms: pageMs, model_load_ms: modelMs, transferred_bytes: bytes, ...threads });
      console.error(JSON.stringify(results.rows.at(-1)));
    }
  }
} finally {
  await browser.close();
  server.close();
  await rm(folder, { recursive: true, force: true });
}
results.loadavg_end = loadavg();
console.log(JSON.stringify(results, null, 1));

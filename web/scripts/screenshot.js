/**
 * The README's screenshot of the demo: the default model, the page's own prompt, a seeded generation.
 * `node scripts/screenshot.js [out.png]` (default: docs/web-demo.png), with the system's Chromium.
 */
import { mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { buildSite } from './build-site.js';
import { serve } from './serve.js';

const out = process.argv[2] ?? fileURLToPath(new URL('../../docs/web-demo.png', import.meta.url));
const folder = await mkdtemp(join(tmpdir(), 'seqgen-shot-'));
await buildSite(join(folder, 'site'));
const { server, url } = await serve(join(folder, 'site'));
const browser = await chromium.launch({ executablePath: process.env.SEQGEN_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 1040 } });
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.predicted !== undefined);
  await page.fill('#seed', '1');
  await page.fill('#length', '240');
  await page.click('#generate');
  await page.waitForFunction(() => document.body.dataset.generated !== undefined, null, { timeout: 120_000 });
  await page.screenshot({ path: `${out}.tmp.png`, fullPage: true });
  await rename(`${out}.tmp.png`, out);
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  server.close();
  await rm(folder, { recursive: true, force: true });
}

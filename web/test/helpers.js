/** Shared by the tests: the Python runtime's expected outputs, the shipped models, and a Chromium page. */
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { buildSite } from '../scripts/build-site.js';
import { serve } from '../scripts/serve.js';
import { BYTES, records } from '../src/wire.js';

export const ARTIFACTS = fileURLToPath(new URL('../../artifacts/', import.meta.url));
/** The shipped models' names: every .onnx file in artifacts/, as the Python runtime finds them. */
export const SHIPPED = readdirSync(ARTIFACTS).filter((file) => file.endsWith('.onnx')).map((file) => file.slice(0, -5)).sort();
const PYTHON = process.env.SEQGEN_PYTHON ?? 'python3';
const CHROMIUM = process.env.SEQGEN_CHROMIUM ?? '/usr/bin/chromium';

/** Run tasks through the Python runtime (test/reference.py) and return its results. */
export function reference(tasks) {
  const script = fileURLToPath(new URL('reference.py', import.meta.url));
  const out = execFileSync(PYTHON, [script], { input: JSON.stringify(tasks), maxBuffer: 1 << 28 });
  return JSON.parse(out.toString());
}

/**
 * A headless Chromium (the system's, never a downloaded one) with a page of the built site open at `page`
 * (api.html: the library as window.seqgen). Returns { page, url, close }.
 */
export async function openSite(pagePath = 'api.html') {
  const folder = await mkdtemp(join(tmpdir(), 'seqgen-web-'));
  await buildSite(join(folder, 'site'));
  const { server, url } = await serve(join(folder, 'site'));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(url + pagePath);
  return {
    browser, page, url, errors,
    close: async () => {
      await browser.close();
      server.close();
      await rm(folder, { recursive: true, force: true });
    },
  };
}

/** One ModelProto metadata_props entry (field 14: key 1, value 2), to append to a file: the last entry of a key wins. */
export function metadataEntry(key, value) {
  const varint = (n) => {
    const out = [];
    for (; n >= 0x80; n >>>= 7) out.push((n & 0x7f) | 0x80);
    return [...out, n];
  };
  const field = (tag, bytes) => [tag, ...varint(bytes.length), ...bytes];
  const encode = (text) => [...new TextEncoder().encode(text)];
  return Uint8Array.from(field(0x72, [...field(0x0a, encode(key)), ...field(0x12, encode(value))]));
}

/**
 * A model file's bytes with metadata values changed (`changes`: key -> new value, or null to remove the
 * entry); the other fields are kept byte for byte, the checksum is not recomputed.
 */
export function withMetadata(bytes, changes) {
  const parts = [];
  const left = new Map(Object.entries(changes));
  for (const [number, kind, value, raw] of records(bytes)) {
    if (number !== 14 || kind !== BYTES) {
      parts.push(raw);
      continue;
    }
    const [[, , key]] = records(value);
    const name = new TextDecoder().decode(key);
    if (!left.has(name)) parts.push(raw);
    else if (left.get(name) !== null) parts.push(metadataEntry(name, left.get(name)));
    left.delete(name);
  }
  for (const [name, text] of left) if (text !== null) parts.push(metadataEntry(name, text));
  return Buffer.concat(parts);
}

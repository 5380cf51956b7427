/**
 * A small static file server for the demo site, the tests and the benchmark (no dependency):
 * `node scripts/serve.js [folder] [--port N]` serves `folder` (default: site/) on 127.0.0.1.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.onnx': 'application/octet-stream', '.png': 'image/png',
};

/** Serve `root` on 127.0.0.1 (port 0: any free one); resolves to { server, url }. */
export function serve(root, port = 0) {
  const base = resolve(root);
  const server = createServer(async (request, response) => {
    let path;
    try {
      path = decodeURIComponent(new URL(request.url, 'http://localhost').pathname);
    } catch {
      return void response.writeHead(400).end('bad request');
    }
    let file = join(base, path);
    if (file !== base && !file.startsWith(base + sep)) return void response.writeHead(403).end('forbidden');
    try {
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const info = await stat(file);
      response.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'content-length': info.size,
        'cache-control': 'no-cache',
      });
      createReadStream(file).pipe(response);
    } catch {
      response.writeHead(404).end('not found');
    }
  });
  return new Promise((done, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => done({ server, url: `http://127.0.0.1:${server.address().port}/` }));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const portAt = args.indexOf('--port');
  const port = portAt >= 0 ? Number(args.splice(portAt, 2)[1]) : 8000;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error('serve: --port must be an integer in 0..65535');
    process.exit(2);
  }
  const root = args[0] ?? fileURLToPath(new URL('../site/', import.meta.url));
  const { url } = await serve(root, port).catch((error) => {
    console.error(`serve: cannot listen on port ${port}: ${error.code}; pass another with --port`);
    process.exit(2);
  });
  console.log(`serving ${root} at ${url} (Ctrl-C stops)`);
}

// The parts that need no browser, run in node against the Python runtime's outputs: the protobuf
// reader, the model file checks and their messages, the vocabulary, and numpy's random stream.
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CELLS } from '../src/cells.js';
import { SeqgenError, pyRepr } from '../src/errors.js';
import { PCG64, checkSeed } from '../src/pcg64.js';
import { crc32, fileChecksum, readModelFile } from '../src/modelfile.js';
import { StopMatcher } from '../src/generate.js';
import { penalize, samplingOptions } from '../src/sampling.js';
import { patternTable } from '../src/pattern.js';
import { BYTES, FIXED32, FIXED64, VARINT, WireError, fields } from '../src/wire.js';
import { ARTIFACTS, SHIPPED, metadataEntry, reference, withMetadata } from './helpers.js';

test("texts are quoted as Python's repr quotes them, unprintable characters escaped", () => {
  const texts = ["a'b", 'a"b\'', '\\', '1\xa0', '\u200b1', '1\u2028', '1.\x85', '\x7f\x00', '\ud800', '\u{1F600}',
    '\u{E0001}', '\ue000', '\u0378', 'é ü', '\t\r\n'];
  assert.deepEqual(texts.map(pyRepr), reference([{ kind: 'repr', texts }])[0]);
});

describe('cells', () => {
  test("the table is the Python runtime's (runtime/cells.py), row for row", () => {
    const [expected] = reference([{ kind: 'cells' }]);
    const compared = ['stateNames', 'bounded', 'onnxOp', 'gates', 'activations', 'quantizedOp'];
    const ours = Object.fromEntries(Object.entries(CELLS).map(([name, row]) =>
      [name, Object.fromEntries(compared.filter((key) => row[key] !== undefined).map((key) => [key, row[key]]))]));
    assert.deepEqual(Object.keys(ours), Object.keys(expected));
    assert.deepEqual(ours, expected);
  });
});

describe('wire', () => {
  test('reads each wire type, with bytes as views', () => {
    // field 1 varint 300, field 2 bytes "hi", field 3 fixed32 7, field 4 fixed64 2**40
    const buf = Uint8Array.of(0x08, 0xac, 0x02, 0x12, 2, 0x68, 0x69, 0x1d, 7, 0, 0, 0, 0x21, 0, 0, 0, 0, 0, 1, 0, 0);
    const got = [...fields(buf)];
    assert.deepEqual(got.map(([n, k]) => [n, k]), [[1, VARINT], [2, BYTES], [3, FIXED32], [4, FIXED64]]);
    assert.equal(got[0][2], 300);
    assert.equal(new TextDecoder().decode(got[1][2]), 'hi');
    assert.equal(got[1][2].buffer, buf.buffer);
    assert.equal(got[2][2], 7);
    assert.equal(got[3][2], 2n ** 40n);
  });

  test('refuses malformed bytes', () => {
    const cases = [[[0x08, 0x80], 'truncated varint'], [[0x12, 5, 1], 'truncated field'], [[0x00, 1], 'field number 0'],
      [[0x0b], 'unsupported wire type 3'], [[0x1d, 1, 2], 'truncated field'], [[0x08, ...Array(11).fill(0xff)], 'truncated varint']];
    for (const [bytes, message] of cases) {
      assert.throws(() => [...fields(Uint8Array.from(bytes))], (e) => e instanceof WireError && e.message === message);
    }
  });
});

describe('model file', () => {
  test('crc32 is zlib\'s', () => {
    assert.equal(crc32(new TextEncoder().encode('123456789')), 'cbf43926');  // the CRC-32 check value
    assert.equal(crc32(new Uint8Array(0)), '00000000');
  });

  test('metadata of every shipped model reads as in Python', async () => {
    const expected = reference(SHIPPED.map((name) => ({ kind: 'info', model: name })));
    for (const [i, name] of SHIPPED.entries()) {
      const file = await readModelFile(await readFile(join(ARTIFACTS, `${name}.onnx`)), name);
      assert.deepEqual(file.info, expected[i], name);
      assert.equal(file.vocab.size, expected[i].vocab_size);
    }
  });

  describe('damaged files get the Python runtime\'s refusals', () => {
    let folder;
    before(async () => { folder = await mkdtemp(join(tmpdir(), 'seqgen-web-files-')); });
    after(() => rm(folder, { recursive: true, force: true }));

    test('each damage', async () => {
      const good = await readFile(join(ARTIFACTS, 'alphabet.onnx'));
      const flipped = Uint8Array.from(good);
      flipped[good.length >> 1] ^= 0x01;  // inside the weights: only the checksum notices
      const version = Uint8Array.from(good);
      const key = new TextEncoder().encode('seqgen.format_version');
      const at = good.findIndex((_, i) => key.every((b, j) => good[i + j] === b));
      assert.equal(good[at + key.length + 2], '1'.charCodeAt(0));  // key, then the value's tag and length
      version[at + key.length + 2] = '9'.charCodeAt(0);
      const edit = (changes) => withMetadata(good, Object.fromEntries(Object.entries(changes).map(
        ([key, value]) => [`seqgen.${key}`, value])));
      const vocab = JSON.parse((await readModelFile(good, 'alphabet')).metadata['seqgen.vocabulary']);
      const vocabulary = (changes) => edit({ vocabulary: JSON.stringify({ ...vocab, ...changes }) });
      const stamped = (changes) => {  // edited, with a checksum recomputed over the edit
        const bytes = edit({ ...changes, file_crc32: null });
        return withMetadata(bytes, { 'seqgen.file_crc32': fileChecksum(bytes) });
      };
      const variants = {
        empty: new Uint8Array(0),
        text: new TextEncoder().encode('not a model at all\n'),
        truncated: good.subarray(0, good.length - 100),
        flipped,
        version,
        minorVersion: stamped({ format_version: '1.7', minor_extra: 'x' }),  // read: a newer minor only adds
        newerMajor: stamped({ format_version: '2' }),
        newerMajorMinor: edit({ format_version: '2.0' }),
        olderMajor: stamped({ format_version: '0' }),
        versionText: edit({ format_version: '1.x' }),
        versionParts: edit({ format_version: '1.2.3' }),
        versionEmpty: edit({ format_version: '' }),
        versionSign: edit({ format_version: '+1' }),
        versionLong: edit({ format_version: '1'.repeat(13) }),
        versionLeadingZero: edit({ format_version: '01' }),
        cell: Buffer.concat([good, metadataEntry('seqgen.cell', 'lstm')]),  // a seqgen key given twice
        unprefixedTwice: Buffer.concat([good, metadataEntry('onnx.note', 'a'), metadataEntry('onnx.note', 'b')]),
        noChecksum: edit({ file_crc32: null }),
        editedMetadata: edit({ created: '2001-01-01T00:00:00Z' }),  // the graph's checks pass, the checksum not
        graphCrcOnly: edit({ graph_crc32: '00000000' }),  // no longer checked on its own
        plusSize: edit({ layers: '+1' }),
        arabicDigit: edit({ hidden_size: '\u0662' }),
        zeroSize: edit({ embedding_size: '0' }),
        hugeSize: edit({ vocab_size: '1234567890123' }),
        flagWord: edit({ line_items: 'True' }),
        quantizationWord: edit({ quantization: 'int4' }),
        quantizationLie: edit({ quantization: 'int8' }),
        hiddenLie: edit({ hidden_size: '7' }),
        embeddingLie: edit({ embedding_size: '3' }),
        cellLie: edit({ cell: 'gru' }),
        layersLie: edit({ layers: '2' }),
        deep: edit({ training: '['.repeat(33) + ']'.repeat(33) }),
        deepObject: edit({ training: '{"a":'.repeat(33) + '1' + '}'.repeat(33) }),
        notDeep: edit({ training: '['.repeat(31) + ']'.repeat(31), file_crc32: null }),
        surrogate: edit({ corpus: '"\\ud800"' }),
        surrogateKey: edit({ training: '{"\\udc00": 1}' }),
        vocabularyFlagText: vocabulary({ lowercase: 'false' }),
        vocabularyExtraKey: vocabulary({ colour: 'red' }),
        vocabularyBoundary: vocabulary({ boundary: 1 }),
        vocabularyBoundaryBool: vocabulary({ boundary: false }),
        vocabularyReplacement: vocabulary({ replacement: 3 }),
        vocabularyUpper: vocabulary({ lowercase: true, chars: vocab.chars.toUpperCase() }),
        vocabularyNotObject: edit({ vocabulary: '["abc"]' }),
      };
      const cases = Object.entries(variants);
      const tasks = [];
      for (const [name, bytes] of cases) {
        await writeFile(join(folder, `${name}.onnx`), bytes);
        tasks.push({ kind: 'load_error', path: join(folder, `${name}.onnx`) });
      }
      const expected = reference(tasks);
      for (const [i, [name, bytes]] of cases.entries()) {
        const path = join(folder, `${name}.onnx`);
        if (name === 'unprefixedTwice') {  // keys outside seqgen's mean nothing to it: accepted by both
          assert.equal(expected[i], null);
          await readModelFile(bytes, path);
          continue;
        }
        if (name === 'minorVersion') {  // accepted by both, the unknown key kept
          assert.equal(expected[i], null);
          const { info } = await readModelFile(bytes, path);
          assert.deepEqual([info.format_version, info.minor_extra], ['1.7', 'x']);
          continue;
        }
        assert.ok(expected[i], `Python accepted the ${name} file`);
        await assert.rejects(readModelFile(bytes, path), (e) => e instanceof SeqgenError && e.message === expected[i], name);
      }
    });

    test('file_crc32 is the Python runtime\'s, covers the seqgen metadata, and upper case is accepted', async () => {
      const good = await readFile(join(ARTIFACTS, 'names.onnx'));
      const file = await readModelFile(good, 'names');
      assert.equal(fileChecksum(good), file.metadata['seqgen.file_crc32']);
      const edited = withMetadata(good, { 'seqgen.created': 'yesterday' });
      assert.notEqual(fileChecksum(edited), fileChecksum(good));
      assert.equal(fileChecksum(withMetadata(good, { 'onnx.note': 'not seqgen\'s' })), fileChecksum(good));
      const restamped = withMetadata(edited, { 'seqgen.file_crc32': fileChecksum(edited).toUpperCase() });
      assert.equal((await readModelFile(restamped, 'restamped')).info.created, 'yesterday');
      await readModelFile(edited, 'unverified', { verify: false });
      const proto = await readModelFile(withMetadata(good, Object.fromEntries([['__proto__', '{"polluted": 1}']])), 'proto');  // not seqgen's
      assert.equal(Object.getPrototypeOf(proto.info), Object.prototype);
      assert.deepEqual(proto.info.__proto__, { polluted: 1 });
      await writeFile(join(folder, 'restamped.onnx'), restamped);
      const expected = reference([{ kind: 'checksum', path: join(folder, 'restamped.onnx') }]);
      assert.equal(expected[0], fileChecksum(restamped));
    });
  });
});

describe('vocabulary', () => {
  test('encodes and refuses as in Python, for each unknown-character policy', async () => {
    const file = await readModelFile(await readFile(join(ARTIFACTS, 'names.onnx')), 'names');
    const text = 'Émile Zoë, 3rd\tof\nnames';
    const policies = [{}, { unknown: 'skip' }, { unknown: 'replace', replacement: 'a' }];
    const expected = reference(policies.map((p) => ({ kind: 'encode', model: 'names', text, ...p })));
    for (const [i, policy] of policies.entries()) {
      const vocab = policy.unknown ? file.vocab.withPolicy(policy.unknown, policy.replacement) : file.vocab;
      if (expected[i].error) {
        const prefix = expected[i].error.split('; ')[0];
        assert.throws(() => vocab.encode(text), (e) => e instanceof SeqgenError && e.message.startsWith(prefix + '; '));
      } else {
        assert.deepEqual(Array.from(vocab.encode(text)), expected[i].ids);
      }
    }
  });
});

describe('random stream', () => {
  test('PCG64 draws numpy\'s doubles for the same seed, across blocks', () => {
    const seeds = [0, 1, 42, 2 ** 32, 2 ** 53 - 1, 2n ** 64n - 1n, 123456789012345678n];
    const expected = reference(seeds.map((seed) => ({ kind: 'random', seed: String(seed), n: 600 })));
    for (const [i, seed] of seeds.entries()) {
      assert.deepEqual(Array.from(new PCG64(seed).random(600)), expected[i], `seed ${seed}`);
    }
  });

  test('seeds outside 0..2**64-1 and non-integers are refused', () => {
    for (const bad of [-1, 1.5, 2 ** 60, 2n ** 64n, '7', true, NaN]) {
      assert.throws(() => checkSeed(bad), SeqgenError, String(bad));
    }
    assert.equal(checkSeed(null), null);
    assert.equal(typeof new PCG64(null).random(1)[0], 'number');
  });
});

describe('sampling options', () => {
  test('bad values are refused with the Python runtime\'s messages, in JavaScript names', () => {
    const cases = [[{ temperature: -1 }, { temperature: -1 }], [{ temperature: Infinity }, { temperature: { float: 'inf' } }],
      [{ temperature: '1' }, { temperature: '1' }], [{ temperature: true }, { temperature: true }],
      [{ topK: 0 }, { top_k: 0 }], [{ topK: 2.5 }, { top_k: 2.5 }], [{ topP: 0 }, { top_p: 0 }],
      [{ minP: 1.5 }, { min_p: 1.5 }], [{ repetitionPenalty: 0 }, { repetition_penalty: 0 }],
      [{ stop: [''] }, { stop: [''] }], [{ stop: Array(65).fill('x') }, { stop: Array(65).fill('x') }],
      [{ stop: 'x'.repeat(1001) }, { stop: 'x'.repeat(1001) }], [{ allowed: '' }, { allowed: '' }],
      [{ allowed: 'ab'.repeat(60_000) }, { allowed: 'ab'.repeat(60_000) }], [{ banned: [3] }, { banned: [3] }],
      [{ banned: ['y'.repeat(101)] }, { banned: ['y'.repeat(101)] }], [{ pattern: 5 }, { pattern: 5 }],
      [{ pattern: 'a'.repeat(10_001) }, { pattern: 'a'.repeat(10_001) }], [{ pattern: ['a'] }, { pattern: ['a'] }]];
    const expected = reference(cases.map(([, options]) => ({ kind: 'sampling_error', options })));
    const jsName = (text) => text.replace(/top_k|top_p|min_p|repetition_penalty/, (name) =>
      name.replace(/_(.)/g, (_, c) => c.toUpperCase()));
    for (const [i, [options]] of cases.entries()) {
      assert.ok(expected[i], `Python accepted ${JSON.stringify(options).slice(0, 80)}`);
      assert.throws(() => samplingOptions(options), (e) => e instanceof SeqgenError && e.message === jsName(expected[i]),
        expected[i]);
    }
    assert.equal(samplingOptions({ allowed: 'cabbage' }).allowed, 'abceg');
    assert.equal(samplingOptions({ banned: 'one' }).banned[0], 'one');
  });

  test('repetition penalty: each recent token once, boundary and masked tokens untouched, finite', () => {
    const logits = Float32Array.of(3, 2, -2, -Infinity, 3e38);
    penalize(logits, [0, 1, 1, 2, 3, 4], 1e-3);
    assert.deepEqual(Array.from(logits), [3, 2000, Math.fround(-0.002), -Infinity, Math.fround(3.4028234663852886e38)]);
  });
});

describe('pattern', () => {
  const CHARS = ['a', 'b', 'Z', '5', '_', ' ', '\n', '-', '.', 'é'];
  /** Every text over CHARS up to `length` characters. */
  const texts = (length) => {
    const all = [''];
    for (let from = 0, n = 1; n <= length; n++) {
      const end = all.length;
      for (let i = from; i < end; i++) for (const c of CHARS) all.push(all[i] + c);
      from = end;
    }
    return all;
  };
  const accepts = (pattern, list) => {
    const { table, accepting, initial } = patternTable(pattern, CHARS, 4e6, () => new Error('too large'));
    const width = CHARS.length + 1;
    return list.map((text) => {
      let at = initial;
      for (const c of text) at = at < 0 ? -1 : table[at * width + CHARS.indexOf(c) + 1];
      return at >= 0 && accepting[at] === 1;
    });
  };

  test('the texts a pattern fully matches are the Python runtime\'s (interegular\'s)', () => {
    const patterns = ['a', 'ab|ba', 'a*b+', '(ab)?Z', '[ab]{2}', '[a-b5]{1,2}_', '[^a]', '[^\\w]+', '.', '.*',
      '\\d\\w', '\\s\\S', '\\D\\W', '(a|b)*?Z+?', '(?:a|)b{,2}', '(?P<x>a|b)+', 'a{2,}', '[a\\-.]', '\\.-',
      '[-a]', '[a-]', '[é]|\\n', '()', 'a|', '(a|(b|Z)*)+5', '[\\s\\d]', '[Z-a]', '[a^.]', '[^.]', '\\-a', 'a{0}b',
      'a b', '|a', '(?:)Z', '[\\]a]', 'a{1,1}?'];
    const list = texts(3);
    const expected = reference(patterns.map((pattern) => ({ kind: 'pattern', pattern, chars: CHARS, texts: list })));
    for (const [i, pattern] of patterns.entries()) {
      assert.ok(expected[i].accepts, `Python refused ${pattern}: ${expected[i].error}`);
      const got = accepts(pattern, list);
      const differ = list.filter((_, j) => got[j] !== expected[i].accepts[j]);
      assert.deepEqual(differ, [], pattern);
      assert.ok(got.some((x) => x), `${pattern} accepts something`);
    }
  });

  test('patterns Python refuses are refused with its message; others outside the subset say so', () => {
    const refused = ['(a', 'a)', '*a', 'a**', '[a', '[z-a]', 'a{3,2}', '^a', 'a\\b', '(?=a)', '(a)\\1',
      '(?P<x>a)(?P=x)', 'a$', '\\Aa', '^' + 'a'.repeat(100), '(' + '\u{1F600}'.repeat(70)];
    const expected = reference(refused.map((pattern) => ({ kind: 'pattern', pattern, chars: CHARS, texts: [] })));
    for (const [i, pattern] of refused.entries()) {
      assert.throws(() => samplingOptions({ pattern }), (e) => e instanceof SeqgenError && e.message === expected[i].error,
        `${pattern}: ${expected[i].error}`);
    }
    for (const pattern of ['a{', '(?i)a', '[]a]', '\\x41', 'a*+', '\\0', '[\\w-z]', 'a{2000}']) {
      assert.throws(() => samplingOptions({ pattern }), /which the browser's pattern compiler does not support yet/, pattern);
    }
  });
});

test('stop matcher never emits a stop string, and holds back only a possible start of one', () => {
  const matcher = new StopMatcher(['\n\n', 'END']);
  assert.deepEqual(matcher.push('ab\n'), ['ab', false]);
  assert.deepEqual(matcher.push('c E'), ['\nc ', false]);
  assert.deepEqual(matcher.push('N'), ['', false]);
  assert.deepEqual(matcher.push('D!'), ['', true]);
  assert.equal(matcher.flush(), '');
});

test('the static server serves the site\'s types and nothing outside its folder', async () => {
  const { serve } = await import('../scripts/serve.js');
  const folder = await mkdtemp(join(tmpdir(), 'seqgen-serve-'));
  await writeFile(join(folder, 'a.wasm'), 'x');
  const { server, url } = await serve(folder);
  try {
    const wasm = await fetch(url + 'a.wasm');
    assert.equal(wasm.headers.get('content-type'), 'application/wasm');
    assert.equal((await fetch(url + '%E0%A4%A')).status, 400);
    assert.equal((await fetch(url + '..%2f..%2fetc%2fpasswd')).status, 403);
    assert.equal((await fetch(url + 'missing.js')).status, 404);
  } finally {
    server.close();
    await rm(folder, { recursive: true, force: true });
  }
});

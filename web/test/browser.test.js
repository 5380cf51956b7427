// The package in a real headless Chromium (the system's chromium, driven by playwright-core), against
// the Python runtime run at test time: next-character probabilities, greedy and seeded generation, and
// scores for every shipped model; the session API; refusals; and the demo page.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SHIPPED, openSite, reference } from './helpers.js';

const PASSAGE = 'First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n' +
  'First Citizen:\nYou are all resolved rather to die than to famish?\n';
/** Prompts and a text to score for each shipped model, all inside its vocabulary. */
const INPUTS = {
  alphabet: { prompts: ['', 'a', 'cde', 'abcdefghij'], text: 'abcdefghijabcdefghij' },
  names: { prompts: ['', 'a', 'mar', 'christ'], text: 'emma\noliver\nzoe\n\nmaximilian\n' },
  shakespeare: { prompts: ['', 'ROMEO:', 'To be, or not to be, that is the q', PASSAGE], text: PASSAGE },
};
/** Sampling option sets (Python names) for the seeded-parity checks; each also runs in the browser. */
const SAMPLED = [{ seed: 1 }, { temperature: 0.8, top_k: 40, seed: 7 }, { top_p: 0.9, seed: 3 },
  { temperature: 1.3, min_p: 0.05, seed: 11 }, { repetition_penalty: 1.3, seed: 5 }, { stop: ['\n\n', 'the'], seed: 2 },
  { temperature: 0.5, top_k: 3, top_p: 0.8, min_p: 0.1, repetition_penalty: 1.1, seed: 2n ** 64n - 1n }];
const GREEDY_CHARS = 500;
/**
 * Float models: the issue's bounds (log-probabilities also get 1e-6 relative: the alphabet model's ReLU
 * logits reach 1e6, where float32's own spacing is 0.06). Int8 models: onnxruntime-web's int8 kernels
 * round differently from onnxruntime's x86 ones; these bounds are about 2.5x the differences measured.
 */
const FLOAT = { probability: 1e-5, logprob: 1e-4, loss: 1e-4 };
const INT8 = { probability: 5e-3, logprob: 7e-2, loss: 3e-3 };
const SAMPLED_CHARS = 200;
/** The Python runtime's option names in the JavaScript API. */
const JS_NAMES = { top_k: 'topK', top_p: 'topP', min_p: 'minP', repetition_penalty: 'repetitionPenalty' };

const inputsOf = (name) => INPUTS[name.replace('-int8', '')];
const jsOptions = (options) => Object.fromEntries(Object.entries(options).map(([k, v]) => [JS_NAMES[k] ?? k, v]));
const pyOptions = (options) => Object.fromEntries(Object.entries(options).map(([k, v]) => [k, typeof v === 'bigint' ? String(v) : v]));

/** Everything the parity tests compare, computed by the library in the page for one model. */
async function browserOutputs(page, name) {
  const { prompts, text } = inputsOf(name);
  const sampled = SAMPLED.map((o) => ({ ...jsOptions(o), seed: String(o.seed) }));
  return page.evaluate(async ({ name, prompts, text, sampled, greedyChars, sampledChars }) => {
    const attempt = async (call) => {
      try {
        return { text: await call() };
      } catch (error) {
        return { error: error.message };
      }
    };
    const model = await seqgen.load(`models/${name}.onnx`, { name });
    const distributions = [];
    for (const prompt of prompts) {
      const session = model.session();
      await session.feed(prompt);
      distributions.push(Array.from(await session.distribution()));
    }
    const greedy = await attempt(() => model.generate(prompts[1], { maxNewChars: greedyChars, temperature: 0 }));
    const samples = [];
    for (const options of sampled) {
      samples.push(await attempt(() => model.generate(prompts[1], { ...options, seed: BigInt(options.seed), maxNewChars: sampledChars })));
    }
    const score = await model.score(text);
    return { distributions, greedy, samples, score: { logprobs: Array.from(score.logprobs), loss: score.loss } };
  }, { name, prompts, text, sampled, greedyChars: GREEDY_CHARS, sampledChars: SAMPLED_CHARS });
}

function pythonOutputs(name) {
  const { prompts, text } = inputsOf(name);
  const tasks = [{ kind: 'distributions', model: name, prompts },
    { kind: 'generate', model: name, prompt: prompts[1], n: GREEDY_CHARS, options: { temperature: 0 } },
    ...SAMPLED.map((options) => ({ kind: 'generate', model: name, prompt: prompts[1], n: SAMPLED_CHARS, options: pyOptions(options) })),
    { kind: 'score', model: name, text }];
  const results = reference(tasks);
  return { distributions: results[0], greedy: results[1], samples: results.slice(2, -1), score: results.at(-1) };
}

const maxDiff = (a, b) => Math.max(...a.map((x, i) => Math.abs(x - b[i])));

describe('in Chromium', () => {
  let site;
  before(async () => { site = await openSite('api.html'); await site.page.waitForFunction(() => document.body.dataset.ready); });
  after(() => site?.close());

  for (const name of SHIPPED) {
    test(`${name}: probabilities, greedy and seeded text, and scores match the Python runtime`, async () => {
      const [web, python] = [await browserOutputs(site.page, name), pythonOutputs(name)];
      const tolerance = name.endsWith('-int8') ? INT8 : FLOAT;
      for (const [i, row] of python.distributions.entries()) {
        const diff = maxDiff(web.distributions[i], row);
        assert.ok(diff <= tolerance.probability, `prompt ${i}: probabilities differ by ${diff}`);
      }
      for (const [i, expected] of python.score.logprobs.entries()) {
        const diff = Math.abs(web.score.logprobs[i] - expected);
        assert.ok(diff <= tolerance.logprob + 1e-6 * Math.abs(expected), `character ${i}: log-probabilities differ by ${diff}`);
      }
      assert.ok(Math.abs(web.score.loss - python.score.loss) <= tolerance.loss + 1e-6 * Math.abs(python.score.loss));
      assert.deepEqual(web.greedy, python.greedy, 'greedy generation');
      if (tolerance === INT8) return;  // sampled text drifts apart where int8 probabilities differ (docs/web.md)
      for (const [i, expected] of python.samples.entries()) assert.deepEqual(web.samples[i], expected, `sampled ${i}`);
    });
  }
});

// The demo page: pick a shipped model, watch the next-character distribution as you type, and
// generate with streaming output. Everything runs here, with the library in ./seqgen/.
import { load } from './seqgen/index.js';

const $ = (id) => document.getElementById(id);
const BARS = 10;
let model = null;
let generation = 0;  // bumped to stop a running generation
let predicting = Promise.resolve();

/** Show a visible one-line message (and mark the page, for the tests). */
function status(text, error = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
}

/** A character as shown on a bar: visible whitespace, and the end of a line item. */
function shown(char) {
  return { '': '⏎end', '\n': '↵', ' ': '␣', '\t': '⇥' }[char] ?? char;
}

async function loadModel(entry) {
  model = null;
  status(`loading ${entry.name}…`);
  const start = performance.now();
  try {
    model = await load(entry.file, { name: entry.name });
  } catch (error) {
    status(error.message, true);
    return;
  }
  const ms = performance.now() - start;
  const info = model.info;
  status(`${entry.name}: ${info.cell} ${info.layers}×${info.hidden_size}, ${(entry.bytes / 1e6).toFixed(1)} MB, ` +
    `loaded in ${ms.toFixed(0)} ms`);
  document.body.dataset.model = entry.name;
  await updateBars();
}

/** Predict after each keystroke; a prediction started while one runs waits for it (the graph runs one call at a time). */
function updateBars() {
  predicting = predicting.then(async () => {
    if (!model) return;
    const text = $('prompt').value;
    const start = performance.now();
    let top;
    try {
      top = await model.predict(text, BARS);
    } catch (error) {
      $('bars').replaceChildren();
      $('predict-time').textContent = error.message;
      $('predict-time').classList.add('error');
      return;
    }
    const us = (performance.now() - start) * 1000;
    $('predict-time').classList.remove('error');
    const took = us < 10_000 ? `${us.toFixed(0)} µs` : `${(us / 1000).toFixed(0)} ms`;
    $('predict-time').textContent = `${[...text].length} characters in one call: ${took} ` +
      `(${(us / Math.max(1, [...text].length + 1)).toFixed(1)} µs per character)`;
    const rows = top.flatMap(([char, p]) => {
      const label = Object.assign(document.createElement('span'), { className: 'char', textContent: shown(char) });
      const bar = Object.assign(document.createElement('div'), { className: 'bar' });
      bar.style.width = `${(100 * p).toFixed(1)}%`;
      const value = Object.assign(document.createElement('span'), { className: 'p', textContent: p.toFixed(3) });
      return [label, bar, value];
    });
    $('bars').replaceChildren(...rows);
    document.body.dataset.predicted = text;
  });
  return predicting;
}

async function generate() {
  if (!model) return;
  const run = ++generation;
  const options = {
    maxNewChars: Number($('length').value) || 300,
    temperature: Number($('temperature').value),
    topP: Number($('top-p').value),
    seed: $('seed').value === '' ? null : Number($('seed').value),
  };
  const prompt = Object.assign(document.createElement('span'), { className: 'prompt', textContent: $('prompt').value });
  $('output').replaceChildren(prompt);
  $('generate').disabled = true;
  $('stop').disabled = false;
  let chars = 0;
  const start = performance.now();
  try {
    for await (const piece of model.stream($('prompt').value, options)) {
      if (run !== generation) break;
      $('output').append(piece);
      chars += [...piece].length;
      const us = (performance.now() - start) * 1000 / chars;
      $('generate-time').textContent = `${chars} characters, ${us.toFixed(0)} µs per character`;
    }
  } catch (error) {
    $('generate-time').textContent = error.message;
  }
  $('generate').disabled = false;
  $('stop').disabled = true;
  document.body.dataset.generated = String(chars);
}

for (const id of ['temperature', 'top-p']) {
  $(id).addEventListener('input', () => { $(`${id}-value`).value = $(id).value; });
}
$('prompt').addEventListener('input', updateBars);
$('generate').addEventListener('click', generate);
$('stop').addEventListener('click', () => { generation++; });

const models = await (await fetch('models/models.json')).json();
$('model').replaceChildren(...models.map((m) => new Option(m.name, m.name)));
$('model').addEventListener('change', () => loadModel(models.find((m) => m.name === $('model').value)));
await loadModel(models[0]);

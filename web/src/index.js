/**
 * seqgen for the web: run a seqgen character model (one self-describing ONNX file) in a browser with
 * onnxruntime-web, with the Python runtime's API in JavaScript naming.
 *
 *   import { load } from 'seqgen-web';
 *   const model = await load('models/shakespeare.onnx');
 *   await model.predict('To be or not to b', 3);   // [['e', 0.85], ...]
 *   await model.generate('ROMEO:', { maxNewChars: 200, temperature: 0.8, seed: 1 });
 */
export * as ort from 'onnxruntime-web';
export { SeqgenError } from './errors.js';
export { Model, Score, load } from './model.js';
export { Session } from './session.js';
export { Sampler, samplingOptions } from './sampling.js';
export { PCG64 } from './pcg64.js';
export { Vocabulary, BOUNDARY } from './vocab.js';
export { readModelFile, crc32, fileChecksum } from './modelfile.js';

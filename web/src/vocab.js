/** Character vocabulary: Unicode code points to token ids and back, with id 0 as the boundary token. */
import { SeqgenError, pyRepr, pyValue } from './errors.js';

/** Token id of the boundary: start of a text or item, end of a line item, and padding. */
export const BOUNDARY = 0;
/** Target id that scoring skips (padding). */
export const IGNORE = -1;
export const ORDERS = ['frequency', 'codepoint'];
export const UNKNOWN_POLICIES = ['error', 'skip', 'replace'];

/**
 * Characters 1..N (index 0 is the boundary) and the policy for characters outside them:
 * "error" (refuse), "skip" (drop them) or "replace" (map them to `replacement`).
 */
export class Vocabulary {
  constructor(chars, { lowercase = false, order = 'frequency', unknown = 'error', replacement = null } = {}) {
    this.chars = Object.freeze([...chars]);
    if (this.chars.some((c) => typeof c !== 'string' || [...c].length !== 1)) {
      throw new SeqgenError('vocabulary entries must be single characters; rebuild the vocabulary');
    }
    if (!this.chars.join('').isWellFormed()) {
      throw new SeqgenError('vocabulary holds a lone surrogate (U+D800..U+DFFF), which no text can carry; ' +
        'rebuild the vocabulary');
    }
    if (new Set(this.chars).size !== this.chars.length) {
      throw new SeqgenError('vocabulary has duplicate characters; rebuild the vocabulary');
    }
    if (!ORDERS.includes(order)) {
      throw new SeqgenError(`unknown vocabulary order ${pyRepr(String(order))}; use one of ${ORDERS.join(', ')}`);
    }
    if (!UNKNOWN_POLICIES.includes(unknown)) {
      throw new SeqgenError(`unknown policy ${pyRepr(String(unknown))} for out-of-vocabulary characters; ` +
        `use one of ${UNKNOWN_POLICIES.join(', ')}`);
    }
    if (unknown === 'replace' && (replacement === null || !this.chars.includes(replacement))) {
      throw new SeqgenError("policy 'replace' needs a replacement character that is in the vocabulary; " +
        "pass one, e.g. withUnknown('replace', ' ')");
    }
    Object.assign(this, { lowercase: Boolean(lowercase), order, unknown, replacement });
    this.ids = new Map(this.chars.map((c, i) => [c, i + 1]));
    Object.freeze(this);
  }

  /** Number of token ids, the boundary included. */
  get size() {
    return this.chars.length + 1;
  }

  /** The same characters with another policy for out-of-vocabulary text. */
  withPolicy(unknown, replacement = null) {
    const { lowercase, order } = this;
    return new Vocabulary(this.chars, { lowercase, order, unknown, replacement });
  }

  /** Token ids (Int32Array) of `text`, out-of-vocabulary characters handled by the policy. */
  encode(text) {
    if (typeof text !== 'string') throw new SeqgenError(`text must be a string, got ${typeof text}`);
    const chars = [...(this.lowercase ? text.toLowerCase() : text)];
    const unknown = new Set(chars.filter((c) => !this.ids.has(c)));
    if (unknown.size === 0) return Int32Array.from(chars, (c) => this.ids.get(c));
    if (this.unknown === 'skip') return Int32Array.from(chars.filter((c) => this.ids.has(c)), (c) => this.ids.get(c));
    if (this.unknown === 'replace') {
      const fill = this.ids.get(this.replacement);
      return Int32Array.from(chars, (c) => this.ids.get(c) ?? fill);
    }
    const sorted = [...unknown].sort((a, b) => a.codePointAt(0) - b.codePointAt(0));
    const shown = sorted.slice(0, 10).map(pyRepr).join(', ') + (sorted.length > 10 ? ' ...' : '');
    throw new SeqgenError(`text has ${sorted.length} character(s) not in the model's vocabulary: ${shown}; ` +
      "remove them, or choose unknown 'skip' or 'replace' (model.withUnknown('skip'))");
  }

  /** Text of token ids; boundary tokens are dropped. */
  decode(ids) {
    let text = '';
    for (const id of ids) if (id !== BOUNDARY) text += this.chars[id - 1];
    return text;
  }

  /** The character of one token id; the boundary is the empty string. */
  char(token) {
    return token === BOUNDARY ? '' : this.chars[token - 1];
  }

  /**
   * Inverse of the Python runtime's `Vocabulary.to_json`, each field strictly of its type ("false" is not a
   * boolean); throws SeqgenError (the Python runtime's messages) on anything malformed.
   */
  static fromJson(text) {
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      throw new SeqgenError('vocabulary JSON is malformed; re-export the model');
    }
    if (data === null || typeof data !== 'object' || Array.isArray(data) || !Object.hasOwn(data, 'chars') ||
        Object.keys(data).some((key) => !Object.hasOwn(JSON_FIELDS, key))) {
      throw new SeqgenError('vocabulary JSON is malformed (it needs chars and only the documented keys); ' +
        're-export the model');
    }
    for (const [key, value] of Object.entries(data)) {
      const [type, nullable] = JSON_FIELDS[key];
      const ok = (nullable && value === null) || (type === 'int' ? Number.isInteger(value) : typeof value === type);
      if (!ok) {
        throw new SeqgenError(`vocabulary ${key} is ${pyValue(value)}, not of its type ` +
          `(${{ string: 'str', boolean: 'bool' }[type] ?? type}); re-export the model`);
      }
    }
    if ((data.boundary ?? BOUNDARY) !== BOUNDARY) {
      throw new SeqgenError(`vocabulary boundary must be ${BOUNDARY}; re-export the model`);
    }
    const vocab = new Vocabulary([...data.chars], {
      lowercase: data.lowercase ?? false,
      order: data.order ?? 'frequency',
      unknown: data.unknown ?? 'error',
      replacement: data.replacement ?? null,
    });
    if (vocab.lowercase && vocab.chars.some((c) => c.toLowerCase() !== c)) {
      throw new SeqgenError('vocabulary says lowercase=true but holds upper-case characters, which lower-cased ' +
        'text never has; re-export the model');
    }
    return vocab;
  }
}

/** The vocabulary JSON's keys: each one's type, and whether it may be null. */
const JSON_FIELDS = Object.freeze({
  chars: ['string', false], boundary: ['int', false], lowercase: ['boolean', false], order: ['string', false],
  unknown: ['string', false], replacement: ['string', true],
});

/**
 * Line items (arrays of ids) as model inputs [boundary, chars] and targets [chars, boundary], right-padded
 * to the longest: { inputs, targets, width } with row-major Int32Arrays (padding: boundary / IGNORE).
 */
export function frameItems(items) {
  const width = Math.max(...items.map((ids) => ids.length)) + 1;
  const targets = new Int32Array(items.length * width).fill(IGNORE);
  const inputs = new Int32Array(items.length * width).fill(BOUNDARY);
  items.forEach((ids, row) => {
    targets.set(ids, row * width);
    targets[row * width + ids.length] = BOUNDARY;
    inputs.set(ids, row * width + 1);
  });
  return { inputs, targets, width };
}

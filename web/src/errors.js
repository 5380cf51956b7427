/** The one error type seqgen raises for bad input: a single line that names the problem and the fix. */
export class SeqgenError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SeqgenError';
  }
}

/** What Python's str.isprintable() rejects: other (control, format, surrogate, private, unassigned) and
 * separator characters, but for the ASCII space. */
const NOT_PRINTABLE = /^[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$/u;

/** Python's repr of a short string, so refusals quote characters as the Python runtime does. */
export function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const hex = (code, digits) => code.toString(16).padStart(digits, '0');
  let out = '';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === '\\') out += '\\\\';
    else if (ch === quote) out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === ' ' || !NOT_PRINTABLE.test(ch)) out += ch;
    else if (code < 0x100) out += '\\x' + hex(code, 2);
    else if (code < 0x10000) out += '\\u' + hex(code, 4);
    else out += '\\U' + hex(code, 8);
  }
  return quote + out + quote;
}

/** Most characters of a pattern a message repeats (runtime/pattern.py's SHOWN_CHARS). */
export const SHOWN_CHARS = 60;

/** A pattern as a message names it, as the Python runtime does: its repr, cut with its length said. */
export function shownPattern(pattern) {
  if (pattern === null) return 'None';
  const chars = [...pattern];
  if (chars.length <= SHOWN_CHARS) return pyRepr(pattern);
  return `${pyRepr(chars.slice(0, SHOWN_CHARS).join(''))}... (${chars.length} characters)`;
}

/** Python's repr of a JSON-like value (null, booleans, numbers, strings, arrays, plain objects). */
export function pyValue(value) {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'string') return pyRepr(value);
  if (typeof value === 'number') return Number.isNaN(value) ? 'nan' : { Infinity: 'inf', '-Infinity': '-inf' }[value] ?? String(value);
  if (typeof value === 'bigint') return String(value);
  if (typeof value !== 'object') return String(value);
  if (Array.isArray(value)) return `[${value.map(pyValue).join(', ')}]`;
  return `{${Object.entries(value).map(([k, v]) => `${pyRepr(k)}: ${pyValue(v)}`).join(', ')}}`;
}

/** Python's order of text (by code point), which is not JavaScript's (by UTF-16 unit) beyond U+FFFF. */
export function byCodePoint(a, b) {
  const [x, y] = [[...a], [...b]];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i].codePointAt(0) - y[i].codePointAt(0);
  }
  return x.length - y.length;
}

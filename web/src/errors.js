/** The one error type seqgen raises for bad input: a single line that names the problem and the fix. */
export class SeqgenError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SeqgenError';
  }
}

/** Python's repr of a short string, so refusals quote characters as the Python runtime does. */
export function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = '';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === '\\') out += '\\\\';
    else if (ch === quote) out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (code < 0x20 || code === 0x7f) out += '\\x' + code.toString(16).padStart(2, '0');
    else out += ch;
  }
  return quote + out + quote;
}

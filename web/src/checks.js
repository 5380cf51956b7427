/**
 * One rule for every option a user passes (runtime/checks.py, with its messages): integers are safe
 * integers (never booleans), reals are finite numbers, each inside its documented range; texts and lists
 * of texts are bounded. Anything else is a one-line SeqgenError.
 */
import { SeqgenError, pyValue } from './errors.js';

function range(low, high, above = false) {
  if (low !== null && high !== null) return ` in ${above ? '(' : '['}${low}, ${high}]`;
  if (low !== null) return ` ${above ? '>' : '>='} ${low}`;
  return high !== null ? ` <= ${high}` : '';
}

/** `value` as an integer within [low, high]; booleans, fractions, text and null are refused. */
export function integer(name, value, low = null, high = null) {
  if (!Number.isSafeInteger(value)) throw new SeqgenError(`${name} must be an integer${range(low, high)}, got ${pyValue(value)}`);
  if ((low !== null && value < low) || (high !== null && value > high)) {
    throw new SeqgenError(`${name} must be an integer${range(low, high)}, got ${value}`);
  }
  return value;
}

/** `value` as a finite number within [low, high] (or (low, high] with `above`); booleans and text refused. */
export function real(name, value, low = null, high = null, above = false) {
  const bound = range(low, high, above);
  if (typeof value !== 'number') throw new SeqgenError(`${name} must be a number${bound}, got ${pyValue(value)}`);
  if (!Number.isFinite(value) || (low !== null && (above ? value <= low : value < low)) || (high !== null && value > high)) {
    throw new SeqgenError(`${name} must be a finite number${bound}, got ${pyValue(value)}`);
  }
  return value;
}

/** One text or an array of texts as an array of non-empty texts, at most `most` of at most `longest` characters. */
export function texts(name, value, most, longest) {
  if (value === null || value === undefined) return [];
  const items = typeof value === 'string' ? [value] : Array.isArray(value) ? [...value] : null;
  if (items === null || items.some((item) => typeof item !== 'string' || item === '')) {
    throw new SeqgenError(`${name} must be non-empty text (one, or a list); remove the empty or non-text one`);
  }
  if (items.length > most || items.some((item) => [...item].length > longest)) {
    throw new SeqgenError(`${name}: at most ${most}, each at most ${longest} characters`);
  }
  return items;
}

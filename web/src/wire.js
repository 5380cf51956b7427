/**
 * Just enough of the protobuf wire format to read an ONNX file's metadata (the idea of runtime/wire.py):
 * onnxruntime-web does not expose metadata_props, and a full protobuf library is not needed for it.
 */
import { SeqgenError } from './errors.js';

export const VARINT = 0;
export const FIXED64 = 1;
export const BYTES = 2;
export const FIXED32 = 5;

/** The bytes are not a well-formed protobuf message. */
export class WireError extends SeqgenError {
  constructor(message) {
    super(message);
    this.name = 'WireError';
  }
}

/** One varint at `pos`: [value, next position]. Values above 2**53 lose precision (none that seqgen reads). */
function varint(buf, pos) {
  let result = 0;
  for (let shift = 0; ; shift += 7) {
    if (pos >= buf.length || shift > 63) throw new WireError('truncated varint');
    const byte = buf[pos++];
    result += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [result, pos];
  }
}

/**
 * Yield [field number, wire type, value, the field's own bytes] for each field of one message (a
 * Uint8Array); BYTES values are subarrays (views, no copy), FIXED64 values are BigInts. The field's
 * bytes (key and value) let a checksum skip some fields.
 */
export function* records(buf) {
  let pos = 0;
  const end = buf.length;
  while (pos < end) {
    const start = pos;
    let key;
    [key, pos] = varint(buf, pos);
    const number = Math.floor(key / 8);
    const kind = key % 8;
    if (number === 0) throw new WireError('field number 0');
    let value;
    if (kind === VARINT) {
      [value, pos] = varint(buf, pos);
    } else if (kind === BYTES) {
      let size;
      [size, pos] = varint(buf, pos);
      if (pos + size > end) throw new WireError('truncated field');
      value = buf.subarray(pos, pos + size);
      pos += size;
    } else if (kind === FIXED64 || kind === FIXED32) {
      const width = kind === FIXED64 ? 8 : 4;
      if (pos + width > end) throw new WireError('truncated field');
      const view = new DataView(buf.buffer, buf.byteOffset + pos, width);
      value = kind === FIXED64 ? view.getBigUint64(0, true) : view.getUint32(0, true);
      pos += width;
    } else {
      throw new WireError(`unsupported wire type ${kind}`);
    }
    yield [number, kind, value, buf.subarray(start, pos)];
  }
}

/** Yield [field number, wire type, value] for each field of one message, as `records` without the bytes. */
export function* fields(buf) {
  for (const [number, kind, value] of records(buf)) yield [number, kind, value];
}

/** The integers of a packed repeated field. */
export function varints(buf) {
  const values = [];
  for (let pos = 0, value; pos < buf.length;) {
    [value, pos] = varint(buf, pos);
    values.push(value);
  }
  return values;
}

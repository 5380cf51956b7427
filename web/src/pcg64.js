/**
 * numpy's default random generator in JavaScript: `np.random.default_rng(seed).random()` draws the same
 * doubles here, so a seed gives the same sampled text as the Python runtime. SeedSequence turns the seed
 * into PCG64's 128-bit state and increment; PCG64 (XSL-RR) makes 64-bit outputs; a double is the top
 * 53 bits times 2**-53.
 */
import { SeqgenError } from './errors.js';

const MASK32 = 0xffffffffn;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;
const MULTIPLIER = 0x2360ed051fc65da44385df649fccf645n;
export const SEED_MAX = (1n << 64n) - 1n;

// SeedSequence constants (numpy/random/bit_generator.pyx).
const POOL_SIZE = 4;
const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;
const XSHIFT = 16;

const mul32 = (a, b) => Math.imul(a, b) >>> 0;

/** A seed as numpy sees it: null (fresh entropy) or an integer in 0..2**64-1 (a Number or a BigInt). */
export function checkSeed(seed, name = 'seed') {
  if (seed === null || seed === undefined) return null;
  const integral = typeof seed === 'bigint' || (typeof seed === 'number' && Number.isSafeInteger(seed));
  if (!integral || BigInt(seed) < 0n || BigInt(seed) > SEED_MAX) {
    throw new SeqgenError(`${name} must be an integer in [0, ${SEED_MAX}] (a BigInt above 2**53), got ${String(seed)}`);
  }
  return BigInt(seed);
}

/** An integer's 32-bit words, least significant first ([0] for 0), as numpy's SeedSequence splits it. */
function words32(value) {
  const words = [];
  do {
    words.push(Number(value & MASK32));
    value >>= 32n;
  } while (value > 0n);
  return words;
}

/** numpy's SeedSequence(entropy).generate_state(4, uint64): the 4 words that seed PCG64. */
export function seedState(entropy) {
  const data = words32(entropy);
  let hashConst = INIT_A;
  const hashmix = (value) => {
    value = (value ^ hashConst) >>> 0;
    hashConst = mul32(hashConst, MULT_A);
    value = mul32(value, hashConst);
    return (value ^ (value >>> XSHIFT)) >>> 0;
  };
  const mix = (x, y) => {
    const result = (mul32(MIX_MULT_L, x) - mul32(MIX_MULT_R, y)) >>> 0;
    return (result ^ (result >>> XSHIFT)) >>> 0;
  };
  const pool = Array.from({ length: POOL_SIZE }, (_, i) => hashmix(i < data.length ? data[i] : 0));
  for (let src = 0; src < POOL_SIZE; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
  }
  for (let src = POOL_SIZE; src < data.length; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(data[src]));
  }
  let constB = INIT_B;
  const state32 = Array.from({ length: 8 }, (_, i) => {
    let value = (pool[i % POOL_SIZE] ^ constB) >>> 0;
    constB = mul32(constB, MULT_B);
    value = mul32(value, constB);
    return (value ^ (value >>> XSHIFT)) >>> 0;
  });
  return [0, 1, 2, 3].map((i) => BigInt(state32[2 * i]) | (BigInt(state32[2 * i + 1]) << 32n));
}

/** PCG64 (XSL-RR 128/64), numpy's default bit generator. */
export class PCG64 {
  /** `seed`: an integer in 0..2**64-1, or null for fresh entropy from crypto.getRandomValues. */
  constructor(seed = null) {
    seed = checkSeed(seed);
    if (seed === null) {
      const words = crypto.getRandomValues(new Uint32Array(4));
      seed = words.reduce((acc, w, i) => acc | (BigInt(w) << BigInt(32 * i)), 0n);
    }
    const [s0, s1, i0, i1] = seedState(seed);
    this.inc = (((i0 << 64n) | i1) << 1n | 1n) & MASK128;
    this.state = 0n;
    this.step();
    this.state = (this.state + ((s0 << 64n) | s1)) & MASK128;
    this.step();
  }

  step() {
    this.state = (this.state * MULTIPLIER + this.inc) & MASK128;
  }

  /** The next 64-bit output (a BigInt). */
  next64() {
    this.step();
    const rot = this.state >> 122n;
    const x = ((this.state >> 64n) ^ this.state) & MASK64;
    return ((x >> rot) | (x << ((64n - rot) & 63n))) & MASK64;
  }

  /** `Generator.random(n)`: n doubles in [0, 1). */
  random(n) {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = Number(this.next64() >> 11n) / 9007199254740992;
    return out;
  }
}

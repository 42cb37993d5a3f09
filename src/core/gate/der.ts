/**
 * A small, bounded reader of ASN.1 DER (ITU-T X.690 §8 and §10), enough for SubjectPublicKeyInfo
 * (RFC 5280 §4.1.2.7) and ECDSA signatures (RFC 3279 §2.2.3). Everything it reads is untrusted:
 *
 *   - a declared length is checked against the bytes that are really there before it is used, and
 *     values are views (subarray) of the input, so no allocation ever follows a declared length;
 *   - only DER is accepted: definite, minimal lengths (no 0x80 indefinite form, no long form where
 *     the short one fits, no leading zero length octets), low-number tags only;
 *   - INTEGERs must be minimally encoded (X.690 §8.3.2); OIDs must be minimal (§8.19.2) and short.
 *
 * Failures throw DerError with a short reason that never echoes the input.
 */

export class DerError extends Error {
  override readonly name = 'DerError';
}

export const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  SEQUENCE: 0x30,
} as const;

/** Longer than any length a public key or signature needs (16 MiB); a larger declared length is refused outright. */
const MAX_LENGTH_OCTETS = 3;
/** No algorithm OID we know has more than 10 arcs; a longer one is refused rather than decoded. */
const MAX_OID_BYTES = 32;

export interface Tlv {
  readonly tag: number;
  readonly value: Uint8Array;
}

/** Reads consecutive TLVs from a view; `end()` insists that nothing is left over. */
export class DerReader {
  private offset = 0;

  constructor(private readonly bytes: Uint8Array) {}

  get done(): boolean {
    return this.offset >= this.bytes.length;
  }

  peekTag(): number | undefined {
    return this.done ? undefined : this.bytes[this.offset];
  }

  /** The next TLV, which must carry `tag` when one is given. */
  read(tag?: number): Tlv {
    const b = this.bytes;
    if (this.offset >= b.length) throw new DerError('truncated: expected another element');
    const t = b[this.offset]!;
    if ((t & 0x1f) === 0x1f) throw new DerError('high tag numbers are not supported');
    if (tag !== undefined && t !== tag) throw new DerError(`expected tag 0x${hex2(tag)}, found 0x${hex2(t)}`);
    let pos = this.offset + 1;
    if (pos >= b.length) throw new DerError('truncated: missing length');
    const first = b[pos++]!;
    let length: number;
    if (first < 0x80) {
      length = first;
    } else {
      const count = first & 0x7f;
      if (count === 0) throw new DerError('indefinite length is not DER');
      if (count > MAX_LENGTH_OCTETS) throw new DerError('declared length too large');
      if (pos + count > b.length) throw new DerError('truncated: length octets');
      if (b[pos] === 0) throw new DerError('length is not minimally encoded');
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + b[pos + i]!;
      pos += count;
      if (length < 0x80) throw new DerError('length is not minimally encoded');
    }
    if (length > b.length - pos) throw new DerError('truncated: declared length exceeds the input');
    this.offset = pos + length;
    return { tag: t, value: b.subarray(pos, pos + length) };
  }

  /** A constructed element's contents, as a reader of its own. */
  sequence(): DerReader {
    return new DerReader(this.read(TAG.SEQUENCE).value);
  }

  end(): void {
    if (!this.done) throw new DerError('unexpected trailing bytes');
  }
}

/** Reads `bytes` as exactly one SEQUENCE and returns a reader of its contents. */
export function readOuterSequence(bytes: Uint8Array): DerReader {
  const outer = new DerReader(bytes);
  const inner = outer.sequence();
  outer.end();
  return inner;
}

/** An OBJECT IDENTIFIER's contents as dotted decimal (X.690 §8.19). */
export function decodeOid(value: Uint8Array): string {
  if (value.length === 0) throw new DerError('empty OID');
  if (value.length > MAX_OID_BYTES) throw new DerError('OID too long');
  const arcs: number[] = [];
  let arc = 0;
  let fresh = true;
  for (const byte of value) {
    if (fresh && byte === 0x80) throw new DerError('OID arc is not minimally encoded');
    arc = arc * 128 + (byte & 0x7f);
    if (arc > 0xffffffff) throw new DerError('OID arc too large');
    fresh = (byte & 0x80) === 0;
    if (fresh) {
      arcs.push(arc);
      arc = 0;
    }
  }
  if (!fresh) throw new DerError('truncated OID');
  const head = arcs[0]!;
  const [a, b] = head < 40 ? [0, head] : head < 80 ? [1, head - 40] : [2, head - 80];
  return [a, b, ...arcs.slice(1)].join('.');
}

/**
 * A non-negative INTEGER's magnitude without leading zeros (X.690 §8.3). Negative values and
 * non-minimal encodings are refused, as Go's cryptobyte ReadASN1Integer refuses them.
 */
export function decodeUnsignedInteger(value: Uint8Array): Uint8Array {
  if (value.length === 0) throw new DerError('empty INTEGER');
  if (value[0]! & 0x80) throw new DerError('negative INTEGER');
  if (value.length > 1 && value[0] === 0 && (value[1]! & 0x80) === 0) throw new DerError('INTEGER is not minimally encoded');
  return value[0] === 0 ? value.subarray(1) : value;
}

/** A BIT STRING's contents, which for keys must be whole octets (unused-bits octet 0). */
export function decodeOctetAlignedBitString(value: Uint8Array): Uint8Array {
  if (value.length === 0) throw new DerError('empty BIT STRING');
  if (value[0] !== 0) throw new DerError('BIT STRING has unused bits');
  return value.subarray(1);
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/**
 * Byte encodings the signature formats use, decoded as strictly as cosign's Go decoders are
 * (encoding/base64 StdEncoding, encoding/pem), with a bound on every input.
 */

const B64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_VALUE = (() => {
  const table = new Int16Array(128).fill(-1);
  for (let i = 0; i < B64_ALPHABET.length; i++) table[B64_ALPHABET.charCodeAt(i)] = i;
  return table;
})();

/**
 * Standard base64 with padding (RFC 4648 §4), as Go's base64.StdEncoding decodes it: CR and LF are
 * skipped anywhere, any other character outside the alphabet is an error, padding is required and
 * only at the end. Returns undefined for anything else, or for input longer than `maxChars`.
 */
export function decodeBase64(input: string, maxChars: number): Uint8Array | undefined {
  if (input.length > maxChars) return undefined;
  const s = input.includes('\n') || input.includes('\r') ? input.replace(/[\r\n]/g, '') : input;
  if (s.length % 4 !== 0) return undefined;
  let pad = 0;
  if (s.endsWith('==')) pad = 2;
  else if (s.endsWith('=')) pad = 1;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < s.length; i += 4) {
    const last = i + 4 === s.length;
    let quad = 0;
    for (let j = 0; j < 4; j++) {
      const c = s.charCodeAt(i + j);
      let v: number;
      if (c === 0x3d /* = */ && last && j >= 4 - pad) v = 0;
      else v = c < 128 ? B64_VALUE[c]! : -1;
      if (v < 0) return undefined;
      quad = (quad << 6) | v;
    }
    out[o++] = (quad >> 16) & 0xff;
    if (o < out.length) out[o++] = (quad >> 8) & 0xff;
    if (o < out.length) out[o++] = quad & 0xff;
  }
  return out;
}

export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}


export interface PemBlock {
  readonly type: string;
  readonly der: Uint8Array;
}

/** A PEM file holding a key is a few hundred bytes; config files with comments stay far below this. */
export const MAX_PEM_CHARS = 64 * 1024;

const PEM_BEGIN = /-----BEGIN ([A-Z0-9 ]{1,40})-----/;

/**
 * The first PEM block of `text` (RFC 7468), as Go's pem.Decode finds it: text before the BEGIN line
 * is skipped, the END line must name the same type, RFC 1421 headers ("Name: value" lines) are
 * skipped. Returns a reason string when there is no well-formed block.
 */
export function decodeFirstPem(text: string): PemBlock | string {
  if (text.length > MAX_PEM_CHARS) return `PEM text longer than ${MAX_PEM_CHARS} characters`;
  const begin = PEM_BEGIN.exec(text);
  if (!begin) return 'no PEM block';
  const type = begin[1]!;
  const bodyStart = begin.index + begin[0].length;
  const endMarker = `-----END ${type}-----`;
  const endAt = text.indexOf(endMarker, bodyStart);
  if (endAt < 0) return 'PEM block has no matching END line';
  const lines = text.slice(bodyStart, endAt).split(/\r?\n/);
  const body = lines
    .filter((line) => !/^[A-Za-z0-9-]+:/.test(line))
    .join('')
    .replace(/[ \t]/g, '');
  const der = decodeBase64(body, MAX_PEM_CHARS);
  if (!der || der.length === 0) return 'PEM body is not valid base64';
  return { type, der };
}

/** `bytes` as WebCrypto's BufferSource: the same view when it is over an ArrayBuffer, else a copy. */
export function bufferSource(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
}

/** A JSON object (not null, not an array), as Go decodes into a struct. */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON text as a value; undefined when it is not JSON (a signature artifact's content is the signer's, not ours). */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** UTF-8 bytes of JSON as a value; undefined when they are not UTF-8 or not JSON. */
export function parseJsonBytes(bytes: Uint8Array): unknown {
  try {
    return parseJson(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
}

/** Standard base64 with padding (RFC 4648 §4), as a Sigstore bundle's JSON carries bytes. */
export function encodeBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** An 8192-bit RSA signature is 1368 base64 characters; anything much longer is not a signature (a layer's, a SET's, a log entry's). */
export const MAX_SIGNATURE_B64_CHARS = 4096;

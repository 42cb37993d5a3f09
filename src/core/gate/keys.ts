import { DerError, TAG, decodeOctetAlignedBitString, decodeOid, decodeUnsignedInteger, readOuterSequence } from './der.js';
import { bufferSource, decodeFirstPem, toHex } from './encoding.js';

/**
 * Public keys for cosign key-based verification, parsed from PEM SubjectPublicKeyInfo (RFC 5280
 * §4.1.2.7) and imported into WebCrypto once, to be reused for every verification. Only WebCrypto
 * (`crypto.subtle`) is used: Node 20 and workerd both have it, and the hash is always named
 * explicitly (workerd's node:crypto `verify(undefined, ...)` fails for EC and RSA keys).
 *
 * How each key type verifies, following cosign (sigstore/sigstore signature.LoadVerifier with the
 * SHA-256 default that `cosign verify --key` passes, and sigstore-go's compatibility verifier):
 *
 *   key                    signature bytes           tried, in order
 *   ECDSA P-256            ASN.1 DER (r, s)          ECDSA SHA-256
 *   ECDSA P-384            ASN.1 DER (r, s)          ECDSA SHA-384 (sigstore default), SHA-256 (cosign v2, old clients)
 *   Ed25519                64 bytes                  pure Ed25519 over the message (not Ed25519ph)
 *   RSA 2048..8192 bits    exactly modulus-length    PKCS#1 v1.5 SHA-256; PSS SHA-256 with salt = 32
 *                                                    (hash length: KMS, OpenSSL) then salt = maximum
 *                                                    (Go's PSSSaltLengthAuto, what sigstore's signer writes)
 *
 * WebCrypto takes ECDSA signatures as IEEE P1363 r||s, so DER is converted with strict checks.
 */

export type KeyAlgorithm = 'ecdsa-p256' | 'ecdsa-p384' | 'ed25519' | 'rsa';

export interface PublicKey {
  readonly algorithm: KeyAlgorithm;
  /** The caller's name for the key (a policy's file name), else `sha256:<fingerprint>`. */
  readonly label: string;
  /** The DER SubjectPublicKeyInfo. */
  readonly spki: Uint8Array;
  /** Lower-case hex sha256 of the SPKI: for a transparency log's key, its log ID (RFC 6962 §3.2). */
  readonly fingerprint: string;
  /** Imported WebCrypto keys; opaque to callers. */
  readonly handles: KeyHandles;
}

export type KeyHandles =
  | { readonly kind: 'ecdsa'; readonly key: CryptoKey; readonly coordinateBytes: number; readonly hashes: readonly string[] }
  | { readonly kind: 'ed25519'; readonly key: CryptoKey }
  | { readonly kind: 'rsa'; readonly pkcs1: CryptoKey; readonly pss: CryptoKey; readonly modulusBits: number };

/** A key that cannot be used, with a short reason (never the key text itself). */
export class KeyError extends Error {
  override readonly name = 'KeyError';
}

const OID = {
  EC_PUBLIC_KEY: '1.2.840.10045.2.1',
  P256: '1.2.840.10045.3.1.7',
  P384: '1.3.132.0.34',
  RSA_ENCRYPTION: '1.2.840.113549.1.1.1',
  ED25519: '1.3.101.112',
} as const;

/** RSA below 2048 bits is not a safe signing key (NIST SP 800-131A); above 8192 bits costs more than any real key is worth. */
const RSA_MIN_BITS = 2048;
const RSA_MAX_BITS = 8192;
/** A SubjectPublicKeyInfo of an 8192-bit RSA key is about 1.1 KB; nothing legitimate is larger. */
const MAX_SPKI_BYTES = 4096;

export interface ParsedSpki {
  readonly algorithm: KeyAlgorithm;
  readonly spki: Uint8Array;
  readonly rsaModulusBits?: number;
}

/** Parses a PEM "PUBLIC KEY" block to its SPKI and key type, without importing it. Throws KeyError. */
export function parsePublicKeyPem(pem: string): ParsedSpki {
  const block = decodeFirstPem(pem);
  if (typeof block === 'string') throw new KeyError(block);
  if (block.type !== 'PUBLIC KEY') throw new KeyError(`PEM block is "${block.type}", not "PUBLIC KEY"`);
  return parseSpki(block.der);
}

/** Reads a DER SubjectPublicKeyInfo and detects the key type from its algorithm OID. Throws KeyError. */
export function parseSpki(der: Uint8Array): ParsedSpki {
  if (der.length > MAX_SPKI_BYTES) throw new KeyError(`public key longer than ${MAX_SPKI_BYTES} bytes`);
  try {
    const spki = readOuterSequence(der);
    const algorithm = spki.sequence();
    const keyBits = decodeOctetAlignedBitString(spki.read(TAG.BIT_STRING).value);
    spki.end();
    const oid = decodeOid(algorithm.read(TAG.OID).value);
    switch (oid) {
      case OID.EC_PUBLIC_KEY: {
        const curve = decodeOid(algorithm.read(TAG.OID).value);
        algorithm.end();
        const size = curve === OID.P256 ? 32 : curve === OID.P384 ? 48 : 0;
        if (size === 0) throw new KeyError('unsupported elliptic curve (P-256 and P-384 are)');
        // Uncompressed points only, as Go's x509.ParsePKIXPublicKey accepts them.
        if (keyBits.length !== 1 + 2 * size || keyBits[0] !== 0x04) throw new KeyError('EC point is not an uncompressed point of its curve');
        return { algorithm: size === 32 ? 'ecdsa-p256' : 'ecdsa-p384', spki: der };
      }
      case OID.ED25519:
        algorithm.end(); // RFC 8410 §3: parameters absent
        if (keyBits.length !== 32) throw new KeyError('Ed25519 key is not 32 bytes');
        return { algorithm: 'ed25519', spki: der };
      case OID.RSA_ENCRYPTION: {
        if (!algorithm.done) {
          const params = algorithm.read(TAG.NULL);
          if (params.value.length !== 0) throw new KeyError('RSA parameters are not NULL');
        }
        algorithm.end();
        const rsa = readOuterSequence(keyBits);
        const modulus = decodeUnsignedInteger(rsa.read(TAG.INTEGER).value);
        const exponent = decodeUnsignedInteger(rsa.read(TAG.INTEGER).value);
        rsa.end();
        const bits = bitLength(modulus);
        if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) throw new KeyError(`RSA modulus of ${bits} bits (${RSA_MIN_BITS} to ${RSA_MAX_BITS} are accepted)`);
        if (exponent.length === 0 || exponent.length > 4 || (exponent[exponent.length - 1]! & 1) === 0 || bitLength(exponent) < 2) {
          throw new KeyError('RSA public exponent is not an odd number between 3 and 2^32');
        }
        return { algorithm: 'rsa', spki: der, rsaModulusBits: bits };
      }
      default:
        throw new KeyError('unsupported key algorithm (ECDSA P-256/P-384, Ed25519 and RSA are)');
    }
  } catch (err) {
    if (err instanceof DerError) throw new KeyError(`malformed public key: ${err.message}`);
    throw err;
  }
}

/** Parses and imports a PEM public key once; the result is reused for every verification. */
export async function importPublicKey(pem: string, options: { label?: string } = {}): Promise<PublicKey> {
  return importParsed(parsePublicKeyPem(pem), options.label);
}

/** As importPublicKey, from DER SPKI bytes (a trusted_root.json `rawBytes`, say). */
export async function importPublicKeyDer(der: Uint8Array, options: { label?: string } = {}): Promise<PublicKey> {
  return importParsed(parseSpki(der), options.label);
}

async function importParsed(parsed: ParsedSpki, label: string | undefined): Promise<PublicKey> {
  const subtle = crypto.subtle;
  const spki = parsed.spki.slice();
  const fingerprint = toHex(new Uint8Array(await subtle.digest('SHA-256', spki)));
  const importAs = async (algorithm: AlgorithmIdentifier | RsaHashedImportParams | EcKeyImportParams): Promise<CryptoKey> => {
    try {
      return await subtle.importKey('spki', spki, algorithm, false, ['verify']);
    } catch {
      throw new KeyError(`the runtime refused the ${parsed.algorithm} key`);
    }
  };
  let handles: KeyHandles;
  switch (parsed.algorithm) {
    case 'ecdsa-p256':
      handles = { kind: 'ecdsa', key: await importAs({ name: 'ECDSA', namedCurve: 'P-256' }), coordinateBytes: 32, hashes: ['SHA-256'] };
      break;
    case 'ecdsa-p384':
      handles = { kind: 'ecdsa', key: await importAs({ name: 'ECDSA', namedCurve: 'P-384' }), coordinateBytes: 48, hashes: ['SHA-384', 'SHA-256'] };
      break;
    case 'ed25519':
      handles = { kind: 'ed25519', key: await importAs({ name: 'Ed25519' }) };
      break;
    case 'rsa':
      handles = {
        kind: 'rsa',
        pkcs1: await importAs({ name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }),
        pss: await importAs({ name: 'RSA-PSS', hash: 'SHA-256' }),
        modulusBits: parsed.rsaModulusBits!,
      };
      break;
  }
  return { algorithm: parsed.algorithm, label: label ?? `sha256:${fingerprint}`, spki, fingerprint, handles };
}

/** `valid`; `invalid` (well-formed for the key type, does not verify); `malformed` (cannot be a signature by this key type). */
export type SignatureCheck = 'valid' | 'invalid' | 'malformed';

const SHA256_BYTES = 32;

/** Verifies `signature` over the exact `message` bytes with `key`, as cosign does for that key type. */
export async function verifySignature(key: PublicKey, message: Uint8Array, signature: Uint8Array): Promise<SignatureCheck> {
  const subtle = crypto.subtle;
  const attempt = async (algorithm: AlgorithmIdentifier | EcdsaParams | RsaPssParams, k: CryptoKey, sig: Uint8Array): Promise<boolean> => {
    try {
      return await subtle.verify(algorithm, k, bufferSource(sig), bufferSource(message));
    } catch {
      return false; // a runtime that throws on a bad signature means the same as false
    }
  };
  const h = key.handles;
  switch (h.kind) {
    case 'ecdsa': {
      const raw = derSignatureToP1363(signature, h.coordinateBytes);
      if (!raw) return 'malformed';
      for (const hash of h.hashes) if (await attempt({ name: 'ECDSA', hash }, h.key, raw)) return 'valid';
      return 'invalid';
    }
    case 'ed25519':
      if (signature.length !== 64) return 'malformed';
      return (await attempt({ name: 'Ed25519' }, h.key, signature)) ? 'valid' : 'invalid';
    case 'rsa': {
      // RFC 8017 §8.2.2 step 1 and §8.1.2 step 1: the signature is exactly k octets (Go checks the same).
      const k = Math.ceil(h.modulusBits / 8);
      if (signature.length !== k) return 'malformed';
      if (await attempt({ name: 'RSASSA-PKCS1-v1_5' }, h.pkcs1, signature)) return 'valid';
      // RFC 8017 §9.1.2: emLen = ceil((modBits - 1) / 8); the largest salt is emLen - hLen - 2.
      const maxSalt = Math.ceil((h.modulusBits - 1) / 8) - SHA256_BYTES - 2;
      for (const saltLength of [SHA256_BYTES, maxSalt]) {
        if (await attempt({ name: 'RSA-PSS', saltLength }, h.pss, signature)) return 'valid';
      }
      return 'invalid';
    }
  }
}

/**
 * ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 3279 §2.2.3) to IEEE P1363 r||s, each
 * left-padded to the curve's coordinate size. Strict DER as Go's ecdsa.VerifyASN1 reads it: one
 * SEQUENCE and nothing after it, two minimal non-negative INTEGERs; r and s must be non-zero and
 * fit the coordinate size (WebCrypto then checks them against the group order).
 */
export function derSignatureToP1363(signature: Uint8Array, coordinateBytes: number): Uint8Array | undefined {
  // SEQUENCE header (2..3 bytes) + two INTEGERs of at most coordinateBytes + 1 bytes with 2-byte headers.
  if (signature.length > 2 * (coordinateBytes + 3) + 3) return undefined;
  try {
    const seq = readOuterSequence(signature);
    const r = decodeUnsignedInteger(seq.read(TAG.INTEGER).value);
    const s = decodeUnsignedInteger(seq.read(TAG.INTEGER).value);
    seq.end();
    if (r.length === 0 || s.length === 0 || r.length > coordinateBytes || s.length > coordinateBytes) return undefined;
    const out = new Uint8Array(2 * coordinateBytes);
    out.set(r, coordinateBytes - r.length);
    out.set(s, 2 * coordinateBytes - s.length);
    return out;
  } catch (err) {
    if (err instanceof DerError) return undefined;
    throw err;
  }
}

function bitLength(magnitude: Uint8Array): number {
  if (magnitude.length === 0) return 0;
  return (magnitude.length - 1) * 8 + (32 - Math.clz32(magnitude[0]!));
}

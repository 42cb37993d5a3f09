/**
 * Cosign key-based signatures made in the test, in cosign's exact legacy formats: the simple-signing
 * payload as sigstore's payload.Cosign marshals it, the signature layer and its annotations, and a
 * Rekor SET bundle from a test "log" key. WebCrypto only, so the same helper runs on Node and in
 * workerd. ECDSA signatures are written as ASN.1 DER, as cosign writes them.
 */
import {
  SIGNATURE_ANNOTATION,
  SIMPLE_SIGNING_MEDIA_TYPE,
  type SignatureLayer,
} from '../../src/core/gate/simple-signing.js';

export type TestAlgorithm = 'ecdsa-p256' | 'ecdsa-p384' | 'ed25519' | 'rsa-pkcs1' | 'rsa-pss';

export interface TestSigner {
  readonly algorithm: TestAlgorithm;
  /** PEM SubjectPublicKeyInfo, as `cosign generate-key-pair` writes cosign.pub. */
  readonly pem: string;
  readonly spki: Uint8Array;
  sign(message: Uint8Array): Promise<Uint8Array>;
}

export interface SignerOptions {
  /** ECDSA P-384: SHA-256 is what cosign v2 used for every curve; default SHA-384. */
  hash?: 'SHA-256' | 'SHA-384';
  /** RSA-PSS salt length; default 32 (the hash length). */
  saltLength?: number;
  /** RSA modulus length; default 2048. */
  modulusLength?: number;
}

export async function generateSigner(algorithm: TestAlgorithm, options: SignerOptions = {}): Promise<TestSigner> {
  const subtle = crypto.subtle;
  const rsa = (name: string) => ({ name, modulusLength: options.modulusLength ?? 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });
  const params: Record<TestAlgorithm, AlgorithmIdentifier | EcKeyGenParams | RsaHashedKeyGenParams> = {
    'ecdsa-p256': { name: 'ECDSA', namedCurve: 'P-256' },
    'ecdsa-p384': { name: 'ECDSA', namedCurve: 'P-384' },
    ed25519: { name: 'Ed25519' },
    'rsa-pkcs1': rsa('RSASSA-PKCS1-v1_5'),
    'rsa-pss': rsa('RSA-PSS'),
  };
  const pair = (await subtle.generateKey(params[algorithm], true, ['sign', 'verify'])) as CryptoKeyPair;
  const spki = new Uint8Array(await subtle.exportKey('spki', pair.publicKey));
  const coordinate = algorithm === 'ecdsa-p256' ? 32 : 48;
  const signParams: Record<TestAlgorithm, AlgorithmIdentifier | EcdsaParams | RsaPssParams> = {
    'ecdsa-p256': { name: 'ECDSA', hash: 'SHA-256' },
    'ecdsa-p384': { name: 'ECDSA', hash: options.hash ?? 'SHA-384' },
    ed25519: { name: 'Ed25519' },
    'rsa-pkcs1': { name: 'RSASSA-PKCS1-v1_5' },
    'rsa-pss': { name: 'RSA-PSS', saltLength: options.saltLength ?? 32 },
  };
  return {
    algorithm,
    pem: toPem('PUBLIC KEY', spki),
    spki,
    async sign(message) {
      const raw = new Uint8Array(await subtle.sign(signParams[algorithm], pair.privateKey, message as Uint8Array<ArrayBuffer>));
      return algorithm.startsWith('ecdsa') ? p1363ToDer(raw, coordinate) : raw;
    },
  };
}

/** The payload exactly as sigstore's payload.Cosign{...}.MarshalJSON writes it. */
export function cosignPayload(manifestDigest: string, reference = 'registry.test/team/app', optional: Record<string, unknown> | null = null): Uint8Array {
  const doc = {
    critical: { identity: { 'docker-reference': reference }, image: { 'docker-manifest-digest': manifestDigest }, type: 'cosign container image signature' },
    optional,
  };
  return new TextEncoder().encode(JSON.stringify(doc));
}

/** The signature manifest's layer for `payload`, with its signature annotation (and any others). */
export async function signatureLayer(payload: Uint8Array, signature: Uint8Array, annotations: Record<string, string> = {}): Promise<SignatureLayer> {
  return {
    mediaType: SIMPLE_SIGNING_MEDIA_TYPE,
    digest: `sha256:${await sha256Hex(payload)}`,
    size: payload.length,
    annotations: { [SIGNATURE_ANNOTATION]: toBase64(signature), ...annotations },
  };
}

/** A signed image: a random manifest digest, its payload, the layer and the signer. */
export async function signedImage(signer: TestSigner, options: { manifestDigest?: string } = {}) {
  const manifestDigest = options.manifestDigest ?? `sha256:${await sha256Hex(crypto.getRandomValues(new Uint8Array(32)))}`;
  const payload = cosignPayload(manifestDigest);
  const signature = await signer.sign(payload);
  return { manifestDigest, payload, signature, layer: await signatureLayer(payload, signature) };
}

export interface RekorEntryOptions {
  /** Fields of the hashedrekord body to replace (for tampering tests). */
  signatureB64?: string;
  publicKeyPem?: string;
  payloadSha256?: string;
  kind?: string;
  logIndex?: number;
  integratedTime?: number;
}

/** The `dev.sigstore.cosign/bundle` annotation value: a hashedrekord 0.0.1 entry and its SET by `log`. */
export async function rekorBundle(log: TestSigner, signer: TestSigner, payload: Uint8Array, signature: Uint8Array, o: RekorEntryOptions = {}): Promise<string> {
  const body = {
    apiVersion: '0.0.1',
    kind: o.kind ?? 'hashedrekord',
    spec: {
      data: { hash: { algorithm: 'sha256', value: o.payloadSha256 ?? (await sha256Hex(payload)) } },
      signature: { content: o.signatureB64 ?? toBase64(signature), publicKey: { content: toBase64(new TextEncoder().encode(o.publicKeyPem ?? signer.pem)) } },
    },
  };
  const entry = {
    body: toBase64(new TextEncoder().encode(JSON.stringify(body))),
    integratedTime: o.integratedTime ?? 1_700_000_000,
    logID: await sha256Hex(log.spki),
    logIndex: o.logIndex ?? 42,
  };
  // Keys already in RFC 8785 order, no whitespace: this is the canonical form the SET signs.
  const set = await log.sign(new TextEncoder().encode(JSON.stringify(entry)));
  return JSON.stringify({ SignedEntryTimestamp: toBase64(set), Payload: entry });
}

export function p1363ToDer(raw: Uint8Array, coordinate: number): Uint8Array {
  const int = (bytes: Uint8Array): number[] => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const v = [...bytes.subarray(i)];
    return v[0]! & 0x80 ? [0, ...v] : v;
  };
  const r = int(raw.subarray(0, coordinate));
  const s = int(raw.subarray(coordinate));
  const body = [0x02, r.length, ...r, 0x02, s.length, ...s];
  return new Uint8Array(body.length < 0x80 ? [0x30, body.length, ...body] : [0x30, 0x81, body.length, ...body]);
}

export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function toPem(type: string, der: Uint8Array): string {
  const b64 = toBase64(der);
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${type}-----\n${lines.join('\n')}\n-----END ${type}-----\n`;
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return [...d].map((b) => b.toString(16).padStart(2, '0')).join('');
}

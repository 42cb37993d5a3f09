import { constants, createHash, generateKeyPairSync, sign as nodeSign, type KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { importPublicKey, type PublicKey } from '../../../src/core/gate/keys.js';
import {
  BUNDLE_ANNOTATION,
  MAX_PAYLOAD_BYTES,
  SIGNATURE_ANNOTATION,
  SIMPLE_SIGNING_MEDIA_TYPE,
  verifySimpleSigning,
  type SignatureLayer,
  type SimpleSigningInput,
} from '../../../src/core/gate/simple-signing.js';
import {
  cosignPayload,
  generateSigner,
  rekorBundle,
  sha256Hex,
  signatureLayer,
  signedImage,
  toBase64,
  type TestAlgorithm,
  type TestSigner,
} from '../../support/cosign-sign.js';

/**
 * Key-based simple-signing verification over keys and signatures made in the test: every key type
 * cosign signs with, signatures in cosign's formats (WebCrypto and node:crypto as two independent
 * signers), and each way a signature layer can be wrong.
 */

const ALGORITHMS: [string, TestAlgorithm, Parameters<typeof generateSigner>[1]][] = [
  ['ECDSA P-256', 'ecdsa-p256', {}],
  ['ECDSA P-384 / SHA-384', 'ecdsa-p384', {}],
  ['ECDSA P-384 / SHA-256 (cosign v2)', 'ecdsa-p384', { hash: 'SHA-256' }],
  ['Ed25519', 'ed25519', {}],
  ['RSA 2048 PKCS#1 v1.5', 'rsa-pkcs1', {}],
  ['RSA 3072 PKCS#1 v1.5', 'rsa-pkcs1', { modulusLength: 3072 }],
  ['RSA 2048 PSS salt 32', 'rsa-pss', {}],
  ['RSA 2048 PSS salt max (Go PSSSaltLengthAuto)', 'rsa-pss', { saltLength: 256 - 32 - 2 }],
];

async function keyOf(signer: TestSigner, label: string = signer.algorithm): Promise<PublicKey> {
  return importPublicKey(signer.pem, { label });
}

function withAnnotation(layer: SignatureLayer, name: string, value: string | undefined): SignatureLayer {
  const annotations = { ...layer.annotations };
  if (value === undefined) delete annotations[name];
  else annotations[name] = value;
  return { ...layer, annotations };
}

describe.each(ALGORITHMS)('%s', (_, algorithm, options) => {
  // RSA key generation is slow; one signer (and one stranger) per algorithm serves every case.
  let pair: Promise<[TestSigner, TestSigner]> | undefined;
  const signers = () => (pair ??= Promise.all([generateSigner(algorithm, options), generateSigner(algorithm, options)]));
  it('verifies a cosign signature and names the key', async () => {
    const [signer] = await signers();
    const img = await signedImage(signer);
    const verdict = await verifySimpleSigning({ layer: img.layer, payload: img.payload, servedDigest: img.manifestDigest, keys: [await keyOf(signer, 'release')] });
    expect(verdict).toEqual({ ok: true, key: 'release' });
  });

  it('refuses a tampered payload whose layer digest was updated to match', async () => {
    const [signer] = await signers();
    const img = await signedImage(signer);
    const payload = cosignPayload(img.manifestDigest, 'registry.test/team/other');
    const layer = await signatureLayer(payload, img.signature);
    const verdict = await verifySimpleSigning({ layer, payload, servedDigest: img.manifestDigest, keys: [await keyOf(signer)] });
    expect(verdict).toMatchObject({ ok: false, reason: 'signature-invalid' });
  });

  it('refuses a payload that is not the blob the layer names', async () => {
    const [signer] = await signers();
    const img = await signedImage(signer);
    const payload = img.payload.slice();
    payload[payload.length - 2] = payload[payload.length - 2]! ^ 1;
    const verdict = await verifySimpleSigning({ layer: img.layer, payload, servedDigest: img.manifestDigest, keys: [await keyOf(signer)] });
    expect(verdict).toMatchObject({ ok: false, reason: 'payload-digest-mismatch' });
  });

  it('refuses a signature for another manifest digest', async () => {
    const [signer] = await signers();
    const img = await signedImage(signer);
    const verdict = await verifySimpleSigning({ layer: img.layer, payload: img.payload, servedDigest: `sha256:${'a'.repeat(64)}`, keys: [await keyOf(signer)] });
    expect(verdict).toMatchObject({ ok: false, reason: 'manifest-digest-mismatch' });
  });

  it('refuses the signature under another key of the same type', async () => {
    const [signer, other] = await signers();
    const img = await signedImage(signer);
    const verdict = await verifySimpleSigning({ layer: img.layer, payload: img.payload, servedDigest: img.manifestDigest, keys: [await keyOf(other)] });
    expect(verdict).toMatchObject({ ok: false, reason: 'signature-invalid' });
  });

  it('refuses a truncated signature', async () => {
    const [signer] = await signers();
    const img = await signedImage(signer);
    const layer = withAnnotation(img.layer, SIGNATURE_ANNOTATION, toBase64(img.signature.subarray(0, img.signature.length - 1)));
    const verdict = await verifySimpleSigning({ layer, payload: img.payload, servedDigest: img.manifestDigest, keys: [await keyOf(signer)] });
    expect(verdict.ok).toBe(false);
    expect(['signature-malformed', 'signature-invalid']).toContain(!verdict.ok && verdict.reason);
  });
});

describe('signatures made by node:crypto (OpenSSL), an independent signer', () => {
  const cases: [string, () => { publicKey: KeyObject; privateKey: KeyObject }, (data: Buffer, key: KeyObject) => Buffer][] = [
    ['ECDSA P-256', () => generateKeyPairSync('ec', { namedCurve: 'P-256' }), (d, k) => nodeSign('sha256', d, k)],
    ['ECDSA P-384 / SHA-384', () => generateKeyPairSync('ec', { namedCurve: 'P-384' }), (d, k) => nodeSign('sha384', d, k)],
    ['ECDSA P-384 / SHA-256', () => generateKeyPairSync('ec', { namedCurve: 'P-384' }), (d, k) => nodeSign('sha256', d, k)],
    ['Ed25519', () => generateKeyPairSync('ed25519'), (d, k) => nodeSign(null, d, k)],
    ['RSA 4096 PKCS#1 v1.5', () => generateKeyPairSync('rsa', { modulusLength: 4096 }), (d, k) => nodeSign('sha256', d, k)],
    [
      'RSA 2048 PSS max salt',
      () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
      (d, k) => nodeSign('sha256', d, { key: k, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_MAX_SIGN }),
    ],
    [
      'RSA 2048 PSS digest-length salt',
      () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
      (d, k) => nodeSign('sha256', d, { key: k, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }),
    ],
  ];
  it.each(cases)('%s', async (_, generate, sign) => {
    const { publicKey, privateKey } = generate();
    const manifestDigest = `sha256:${createHash('sha256').update('a manifest').digest('hex')}`;
    const payload = cosignPayload(manifestDigest);
    const layer = await signatureLayer(payload, sign(Buffer.from(payload), privateKey));
    const key = await importPublicKey(publicKey.export({ type: 'spki', format: 'pem' }).toString(), { label: 'k' });
    expect(await verifySimpleSigning({ layer, payload, servedDigest: manifestDigest, keys: [key] })).toEqual({ ok: true, key: 'k' });
  });

  it('refuses an RSA-PSS signature with a salt length cosign does not write (20)', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const manifestDigest = `sha256:${'b'.repeat(64)}`;
    const payload = cosignPayload(manifestDigest);
    const sig = nodeSign('sha256', Buffer.from(payload), { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 20 });
    const key = await importPublicKey(publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const verdict = await verifySimpleSigning({ layer: await signatureLayer(payload, sig), payload, servedDigest: manifestDigest, keys: [key] });
    expect(verdict).toMatchObject({ ok: false, reason: 'signature-invalid' });
  });
});

describe('the signature layer', () => {
  async function fixture() {
    const signer = await generateSigner('ecdsa-p256');
    const img = await signedImage(signer);
    const key = await keyOf(signer, 'k');
    const input: SimpleSigningInput = { layer: img.layer, payload: img.payload, servedDigest: img.manifestDigest, keys: [key] };
    return { signer, img, key, input };
  }

  it('is refused with no keys', async () => {
    const { input } = await fixture();
    expect(await verifySimpleSigning({ ...input, keys: [] })).toMatchObject({ ok: false, reason: 'no-keys' });
  });

  it('must have the simple-signing media type', async () => {
    const { input } = await fixture();
    for (const mediaType of ['text/plain', 'application/vnd.oci.image.layer.v1.tar', `${SIMPLE_SIGNING_MEDIA_TYPE} `, SIMPLE_SIGNING_MEDIA_TYPE.toUpperCase()]) {
      expect(await verifySimpleSigning({ ...input, layer: { ...input.layer, mediaType } })).toMatchObject({ ok: false, reason: 'not-simple-signing' });
    }
  });

  it('must carry the signature annotation', async () => {
    const { input } = await fixture();
    for (const value of [undefined, '']) {
      const layer = withAnnotation(input.layer, SIGNATURE_ANNOTATION, value);
      expect(await verifySimpleSigning({ ...input, layer })).toMatchObject({ ok: false, reason: 'signature-missing' });
    }
  });

  it('refuses malformed base64 and accepts the line breaks Go skips', async () => {
    const { input } = await fixture();
    const b64 = input.layer.annotations![SIGNATURE_ANNOTATION]!;
    for (const bad of [b64.slice(0, -1), `${b64}=`, `*${b64.slice(1)}`, `${b64} `, 'A'.repeat(5000), '====', b64.replace(/^./, '-')]) {
      const layer = withAnnotation(input.layer, SIGNATURE_ANNOTATION, bad);
      expect(await verifySimpleSigning({ ...input, layer }), bad.slice(0, 20)).toMatchObject({ ok: false, reason: 'signature-malformed' });
    }
    const wrapped = withAnnotation(input.layer, SIGNATURE_ANNOTATION, `${b64.slice(0, 20)}\r\n${b64.slice(20)}\n`);
    expect(await verifySimpleSigning({ ...input, layer: wrapped })).toEqual({ ok: true, key: 'k' });
  });

  it('refuses ECDSA signatures that are not strict DER', async () => {
    const { input, img } = await fixture();
    const der = img.signature;
    const rLen = der[3]!;
    const r = der.subarray(4, 4 + rLen);
    const s = der.subarray(6 + rLen);
    const seq = (...parts: number[][]) => new Uint8Array([0x30, parts.flat().length, ...parts.flat()]);
    const int = (v: Uint8Array | number[]) => [0x02, v.length, ...v];
    const bad: [string, Uint8Array][] = [
      ['trailing byte', new Uint8Array([...der, 0])],
      ['indefinite length', new Uint8Array([0x30, 0x80, ...der.subarray(2), 0, 0])],
      ['long-form length that fits short form', new Uint8Array([0x30, 0x81, der[1]!, ...der.subarray(2)])],
      ['non-minimal INTEGER', seq(int([0, 0, ...r]), int(s))],
      ['negative INTEGER', seq(int([0x80, ...r.subarray(r[0] === 0 ? 1 : 0)].slice(0, 32)), int(s))],
      ['r = 0', seq(int([0]), int(s))],
      ['r longer than the curve', seq(int([1, ...new Uint8Array(32)]), int(s))],
      ['three INTEGERs', seq(int(r), int(s), int([1]))],
      ['declared length beyond the input', new Uint8Array([0x30, 0x84, 0xff, 0xff, 0xff, 0xff])],
      ['P1363 instead of DER', new Uint8Array(64).fill(7)],
      ['one byte', new Uint8Array([0x30])],
    ];
    for (const [why, sig] of bad) {
      const layer = withAnnotation(input.layer, SIGNATURE_ANNOTATION, toBase64(sig));
      const verdict = await verifySimpleSigning({ ...input, layer });
      expect(verdict.ok, why).toBe(false);
      expect(['signature-malformed', 'signature-invalid'], why).toContain(!verdict.ok && verdict.reason);
    }
  });

  it('checks the layer size and digest against the payload', async () => {
    const { input } = await fixture();
    expect(await verifySimpleSigning({ ...input, layer: { ...input.layer, size: input.layer.size + 1 } })).toMatchObject({ ok: false, reason: 'payload-size-mismatch' });
    for (const digest of ['sha256:abc', 'md5:00', `sha256:${'0'.repeat(64)}`, input.layer.digest.toUpperCase()]) {
      expect(await verifySimpleSigning({ ...input, layer: { ...input.layer, digest } })).toMatchObject({ ok: false, reason: 'payload-digest-mismatch' });
    }
  });

  it('accepts a sha512 layer digest', async () => {
    const { input } = await fixture();
    const digest = `sha512:${createHash('sha512').update(input.payload).digest('hex')}`;
    expect(await verifySimpleSigning({ ...input, layer: { ...input.layer, digest } })).toEqual({ ok: true, key: 'k' });
  });

  it('refuses a payload over the size cap before hashing it', async () => {
    const { input } = await fixture();
    const payload = new Uint8Array(MAX_PAYLOAD_BYTES + 1);
    const verdict = await verifySimpleSigning({ ...input, payload, layer: { ...input.layer, size: payload.length } });
    expect(verdict).toMatchObject({ ok: false, reason: 'payload-too-large' });
  });

  it('tries every key and names the one that verified', async () => {
    const { input, signer } = await fixture();
    const others = await Promise.all((['ed25519', 'rsa-pkcs1', 'ecdsa-p384'] as const).map(async (a) => keyOf(await generateSigner(a))));
    expect(await verifySimpleSigning({ ...input, keys: [...others, await keyOf(signer, 'the-one')] })).toEqual({ ok: true, key: 'the-one' });
    expect(await verifySimpleSigning({ ...input, keys: others })).toMatchObject({ ok: false, reason: 'signature-invalid' });
  });

  it('keeps reasons short whatever the input', async () => {
    const { input } = await fixture();
    const huge = 'x'.repeat(100_000);
    const verdicts = await Promise.all([
      verifySimpleSigning({ ...input, layer: { ...input.layer, mediaType: huge } }),
      verifySimpleSigning({ ...input, layer: withAnnotation(input.layer, SIGNATURE_ANNOTATION, huge) }),
      verifySimpleSigning({ ...input, layer: { ...input.layer, digest: huge } }),
      verifySimpleSigning({ ...input, servedDigest: huge }),
    ]);
    for (const v of verdicts) {
      expect(v.ok).toBe(false);
      expect(!v.ok && v.detail.length).toBeLessThan(120);
    }
  });
});

describe('the payload', () => {
  async function verifyPayload(payload: Uint8Array, servedDigest = `sha256:${'c'.repeat(64)}`) {
    const signer = await generateSigner('ecdsa-p256');
    const layer = await signatureLayer(payload, await signer.sign(payload));
    return verifySimpleSigning({ layer, payload, servedDigest, keys: [await keyOf(signer)] });
  }
  const digest = `sha256:${'c'.repeat(64)}`;
  const json = (doc: unknown) => new TextEncoder().encode(JSON.stringify(doc));
  const critical = (over: Record<string, unknown>) => ({ identity: { 'docker-reference': 'r' }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature', ...over });

  it('parses the claim rather than comparing bytes: any key order, whitespace, optional fields', async () => {
    const text = `{ "optional": {"creator": "x", "n": 1},\n "critical": {"type": "cosign container image signature", "image": {"docker-manifest-digest": "${digest}"}}}`;
    expect(await verifyPayload(new TextEncoder().encode(text))).toMatchObject({ ok: true });
  });

  it.each<[string, Uint8Array, string]>([
    ['not JSON', new TextEncoder().encode('this is not a signature'), 'payload-malformed'],
    ['a JSON array', json([critical({})]), 'payload-malformed'],
    ['a byte-order mark', new Uint8Array([0xef, 0xbb, 0xbf, ...json({ critical: critical({}) })]), 'payload-malformed'],
    ['invalid UTF-8', new Uint8Array([...json({ critical: critical({}) }).subarray(0, -1), 0xff, 0x7d]), 'payload-malformed'],
    ['no critical', json({ optional: null }), 'payload-malformed'],
    ['critical.image a string', json({ critical: critical({ image: digest }) }), 'payload-malformed'],
    ['the digest a number', json({ critical: critical({ image: { 'docker-manifest-digest': 5 } }) }), 'payload-malformed'],
    ['the digest under another case', json({ critical: critical({ image: { 'Docker-Manifest-Digest': digest } }) }), 'payload-malformed'],
    ['optional a string', json({ critical: critical({}), optional: 'x' }), 'payload-malformed'],
    ['another critical.type', json({ critical: critical({ type: 'atomic container signature' }) }), 'payload-not-cosign'],
    ['no critical.type', json({ critical: critical({ type: undefined }) }), 'payload-not-cosign'],
    ['a digest with a different case', json({ critical: critical({ image: { 'docker-manifest-digest': digest.toUpperCase() } }) }), 'manifest-digest-mismatch'],
  ])('refuses %s', async (_, payload, reason) => {
    expect(await verifyPayload(payload)).toMatchObject({ ok: false, reason });
  });
});

describe('transparency log (Rekor SET bundle)', () => {
  async function setup(entry: Parameters<typeof rekorBundle>[4] = {}) {
    const signer = await generateSigner('ecdsa-p256');
    const log = await generateSigner('ecdsa-p256');
    const img = await signedImage(signer);
    const bundle = await rekorBundle(log, signer, img.payload, img.signature, entry);
    const layer = withAnnotation(img.layer, BUNDLE_ANNOTATION, bundle);
    const input: SimpleSigningInput = {
      layer,
      payload: img.payload,
      servedDigest: img.manifestDigest,
      keys: [await keyOf(signer, 'k')],
      tlog: { logKeys: [await keyOf(log, 'rekor')], required: true },
    };
    return { input, signer, log, img };
  }

  it('verifies a SET made by a trusted log and returns the entry', async () => {
    const { input, log } = await setup({ logIndex: 7, integratedTime: 1_650_000_000 });
    expect(await verifySimpleSigning(input)).toEqual({ ok: true, key: 'k', tlog: { logIndex: 7, integratedTime: 1_650_000_000, logID: await sha256Hex(log.spki) } });
  });

  it('ignores the bundle when no log keys are given (cosign --insecure-ignore-tlog)', async () => {
    const { input } = await setup({ signatureB64: toBase64(new Uint8Array(70)) });
    expect(await verifySimpleSigning({ ...input, tlog: undefined })).toEqual({ ok: true, key: 'k' });
  });

  it.each<[string, Parameters<typeof rekorBundle>[4], string]>([
    ['another signature in the entry', { signatureB64: toBase64(new Uint8Array(70).fill(1)) }, 'tlog-signature-mismatch'],
    ['another payload hash', { payloadSha256: 'd'.repeat(64) }, 'tlog-payload-mismatch'],
    ['an intoto entry', { kind: 'intoto' }, 'tlog-body-unsupported'],
  ])('refuses %s, even when the log is not required', async (_, entry, reason) => {
    const { input } = await setup(entry);
    expect(await verifySimpleSigning(input)).toMatchObject({ ok: false, reason });
    expect(await verifySimpleSigning({ ...input, tlog: { ...input.tlog!, required: false } })).toMatchObject({ ok: false, reason });
  });

  it('refuses an entry naming another key', async () => {
    const other = await generateSigner('ecdsa-p256');
    const { input } = await setup({ publicKeyPem: other.pem });
    expect(await verifySimpleSigning(input)).toMatchObject({ ok: false, reason: 'tlog-key-mismatch' });
  });

  it('refuses a bundle from an untrusted log, or with its SET altered', async () => {
    const { input } = await setup();
    const stranger = await keyOf(await generateSigner('ecdsa-p256'));
    expect(await verifySimpleSigning({ ...input, tlog: { logKeys: [stranger], required: true } })).toMatchObject({ ok: false, reason: 'tlog-unknown-log' });

    const bundle = JSON.parse(input.layer.annotations![BUNDLE_ANNOTATION]!) as { Payload: { integratedTime: number } };
    bundle.Payload.integratedTime += 1;
    const layer = withAnnotation(input.layer, BUNDLE_ANNOTATION, JSON.stringify(bundle));
    expect(await verifySimpleSigning({ ...input, layer })).toMatchObject({ ok: false, reason: 'tlog-set-invalid' });
  });

  it.each(['', 'null', '[]', '{"Payload":{}}', '{"SignedEntryTimestamp":"!!","Payload":{"body":"e30=","integratedTime":1,"logIndex":1,"logID":"00"}}', 'x'.repeat(70_000)])(
    'refuses a malformed bundle %#',
    async (bundle) => {
      const { input } = await setup();
      const layer = withAnnotation(input.layer, BUNDLE_ANNOTATION, bundle);
      expect(await verifySimpleSigning({ ...input, layer })).toMatchObject({ ok: false, reason: 'tlog-malformed' });
    },
  );
});

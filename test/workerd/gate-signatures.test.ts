import { describe, expect, it } from 'vitest';
import { importPublicKey } from '../../src/core/gate/keys.js';
import { BUNDLE_ANNOTATION, verifySimpleSigning, type SignatureLayer } from '../../src/core/gate/simple-signing.js';
import { generateSigner, rekorBundle, sha256Hex, signedImage, type TestAlgorithm } from '../support/cosign-sign.js';

/**
 * Cosign key-based verification inside workerd: the same core code, on workerd's WebCrypto
 * (BoringSSL), which has no node:crypto default digests to lean on. Keys and signatures are made
 * here with workerd's own WebCrypto; the real cosign fixtures (../shared/cosign-fixtures, read at
 * transform time by Vite's import.meta.glob, so nothing is copied) run when the folder exists.
 */

const ALGORITHMS: [TestAlgorithm, Parameters<typeof generateSigner>[1]][] = [
  ['ecdsa-p256', {}],
  ['ecdsa-p384', {}],
  ['ecdsa-p384', { hash: 'SHA-256' }],
  ['ed25519', {}],
  ['rsa-pkcs1', {}],
  ['rsa-pss', {}],
  ['rsa-pss', { saltLength: 256 - 32 - 2 }],
];

describe('generated keys, verified in workerd', () => {
  it.each(ALGORITHMS)('%s %j: valid, wrong digest, wrong key', async (algorithm, options) => {
    const signer = await generateSigner(algorithm, options);
    const other = await generateSigner(algorithm, options);
    const img = await signedImage(signer);
    const key = await importPublicKey(signer.pem, { label: 'k' });
    const input = { layer: img.layer, payload: img.payload, servedDigest: img.manifestDigest, keys: [key] };
    expect(await verifySimpleSigning(input)).toEqual({ ok: true, key: 'k' });
    expect(await verifySimpleSigning({ ...input, servedDigest: `sha256:${'e'.repeat(64)}` })).toMatchObject({ ok: false, reason: 'manifest-digest-mismatch' });
    expect(await verifySimpleSigning({ ...input, keys: [await importPublicKey(other.pem)] })).toMatchObject({ ok: false, reason: 'signature-invalid' });
  });

  it('verifies a Rekor SET bundle', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const log = await generateSigner('ecdsa-p256');
    const img = await signedImage(signer);
    const layer = { ...img.layer, annotations: { ...img.layer.annotations, [BUNDLE_ANNOTATION]: await rekorBundle(log, signer, img.payload, img.signature) } };
    const verdict = await verifySimpleSigning({
      layer,
      payload: img.payload,
      servedDigest: img.manifestDigest,
      keys: [await importPublicKey(signer.pem, { label: 'k' })],
      tlog: { logKeys: [await importPublicKey(log.pem)], required: true },
    });
    expect(verdict).toEqual({ ok: true, key: 'k', tlog: { logIndex: 42, integratedTime: 1_700_000_000, logID: await sha256Hex(log.spki) } });
  });
});

const files = import.meta.glob<string>('../../../shared/cosign-fixtures/ci-*/*', { eager: true, query: '?raw', import: 'default' });
const folder = (name: string) => (file: string) => {
  const key = Object.keys(files).find((k) => k.endsWith(`/${name}/${file}`));
  if (key === undefined) throw new Error(`fixture file ${name}/${file} not found`);
  return files[key]!;
};

describe.skipIf(Object.keys(files).length === 0)('real cosign fixtures, verified in workerd', () => {
  async function verify(name: string, keyFiles: string[], rekor?: string) {
    const read = folder(name);
    const payload = new TextEncoder().encode(read('payload.json'));
    const layer: SignatureLayer = {
      mediaType: read('layer-mediatype.txt'),
      digest: `sha256:${await sha256Hex(payload)}`,
      size: payload.length,
      annotations: JSON.parse(read('annotations.json')) as Record<string, string>,
    };
    const servedDigest = `sha256:${await sha256Hex(new TextEncoder().encode(read('manifest.json')))}`;
    const keys = await Promise.all(keyFiles.map((f) => importPublicKey(read(f), { label: f })));
    const tlog = rekor ? { logKeys: [await importPublicKey(read(rekor))], required: true } : undefined;
    return verifySimpleSigning({ layer, payload, servedDigest, keys, tlog });
  }

  it('VALID ones pass', async () => {
    expect(await verify('ci-key-valid', ['cosign.pub'])).toEqual({ ok: true, key: 'cosign.pub' });
    expect(await verify('ci-key-valid-skopeo-tag', ['cosign.pub'])).toEqual({ ok: true, key: 'cosign.pub' });
    expect(await verify('ci-key-rekor-valid', ['cosign2.pub'], 'rekor.pub')).toMatchObject({ ok: true, key: 'cosign2.pub', tlog: { logIndex: 11608800 } });
  });

  it('REJECT ones are refused for their reason', async () => {
    expect(await verify('ci-key-valid', ['cosign2.pub'])).toMatchObject({ ok: false, reason: 'signature-invalid' });
    expect(await verify('ci-key-modified-manifest_fail', ['cosign.pub'])).toMatchObject({ ok: false, reason: 'manifest-digest-mismatch' });
    expect(await verify('ci-unknown-key_fail', ['cosign.pub', 'cosign2.pub'])).toMatchObject({ ok: false, reason: 'signature-invalid' });
    expect(await verify('ci-other-attachment_fail', ['cosign.pub'])).toMatchObject({ ok: false, reason: 'not-simple-signing' });
  });
});

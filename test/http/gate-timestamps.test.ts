import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SigstoreBundleVerifier } from '../../src/adapters/sigstore/bundle-verifier.js';
import { checkBundle, checkLegacyKeyless, type BundlePolicy } from '../../src/core/gate/bundles.js';
import type { GatePolicy } from '../../src/core/gate/gate.js';
import { compileGlob } from '../../src/core/glob.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { TIMESTAMP_ANNOTATION, type SignatureLayer } from '../../src/core/gate/simple-signing.js';
import { testApp } from '../support/app.js';
import { mirrorTest } from '../support/mirror.js';
import { cosignPayload, generateSigner, rekorBundle, signatureLayer, toBase64, type TestSigner } from '../support/cosign-sign.js';
import { blob, image } from '../support/images.js';
import { testSigstore, type TestSigstore } from '../support/sigstore-pki.js';

/**
 * Keyless legacy `.sig` layers whose signing time is an RFC 3161 timestamp
 * (`dev.sigstore.cosign/rfc3161timestamp`, as `cosign sign --timestamp-server-url` writes it,
 * with or without a Rekor SET): a private Sigstore made in the test (test/support/sigstore-pki.ts:
 * a Fulcio-like CA, a CT log, a TSA and their trusted root) signs, and the gate verifies the
 * chain at the timestamp's time, the SCT, the timestamp (over the raw signature bytes, by a TSA
 * of the root) and the identity; every one of them broken in turn is refused.
 */

const verifier = new SigstoreBundleVerifier();
const ISSUER = 'https://issuer.outpost.test';
const EMAIL = 'release@outpost.test';

interface Signed {
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
  readonly layer: SignatureLayer;
}

/** A `.sig` layer as keyless cosign writes it: the certificate, and the annotations given. */
async function keylessLayer(sigstore: TestSigstore, o: { digest?: string; time?: Date; notBefore?: Date; stamp?: (signature: Uint8Array) => Promise<Uint8Array | string | undefined>; rekor?: TestSigner; withoutSct?: boolean } = {}): Promise<Signed & { key: TestSigner }> {
  const key = await generateSigner('ecdsa-p256');
  const notBefore = o.notBefore ?? new Date(Date.UTC(2026, 5, 1, 12, 0, 0));
  const leaf = await sigstore.leaf(key, { email: EMAIL, issuer: ISSUER, notBefore, withoutSct: o.withoutSct });
  const payload = cosignPayload(o.digest ?? `sha256:${'ab'.repeat(32)}`);
  const signature = await key.sign(payload);
  const annotations: Record<string, string> = { 'dev.sigstore.cosign/certificate': leaf.pem };
  const stamp = o.stamp ? await o.stamp(signature) : await sigstore.timestamp(signature, o.time ?? new Date(notBefore.getTime() + 60_000));
  if (typeof stamp === 'string') annotations[TIMESTAMP_ANNOTATION] = stamp;
  else if (stamp) annotations[TIMESTAMP_ANNOTATION] = JSON.stringify({ SignedRFC3161Timestamp: toBase64(stamp) });
  if (o.rekor) annotations['dev.sigstore.cosign/bundle'] = await rekorBundle(o.rekor, key, payload, signature, { publicKeyPem: leaf.pem, integratedTime: Math.floor(notBefore.getTime() / 1000) + 30 });
  return { key, payload, signature, layer: await signatureLayer(payload, signature, annotations) };
}

const bundlePolicy = (trustedRoot: string, p: Partial<BundlePolicy> = {}): BundlePolicy => ({ keys: [], keyless: [{ issuer: ISSUER, subject: EMAIL }], trustedRoot, requireTransparencyLog: false, ...p });
const check = (s: Signed, policy: BundlePolicy, digest = `sha256:${'ab'.repeat(32)}`) => checkLegacyKeyless(verifier, policy, s.layer, s.payload, digest);

describe('keyless .sig layers timestamped by an RFC 3161 authority', () => {
  it('verify with the timestamp alone (no Rekor entry): chain at its time, SCT, timestamp, identity', async () => {
    const sigstore = await testSigstore();
    const root = await sigstore.trustedRoot();
    const signed = await keylessLayer(sigstore);
    expect(await check(signed, bundlePolicy(root))).toEqual({ ok: true, how: `signed by ${EMAIL} (${ISSUER})` });
    expect(await check(signed, bundlePolicy(root, { keyless: [{ issuer: ISSUER, subject: 'someone@else.test' }] }))).toMatchObject({ ok: false, why: expect.stringMatching(/identity/) });
    expect(await check(signed, bundlePolicy(root, { keyless: [{ issuer: 'https://other.test', subject: EMAIL }] }))).toMatchObject({ ok: false, why: expect.stringMatching(/identity/) });
    // The payload names another digest: refused before any cryptography.
    expect(await check(signed, bundlePolicy(root), `sha256:${'cd'.repeat(32)}`)).toEqual({ ok: false, why: 'manifest-digest-mismatch: the signature is for another manifest digest' });
  });

  it('are refused when the timestamp is not a proof of the signing time', async () => {
    const sigstore = await testSigstore();
    const root = await sigstore.trustedRoot();
    const notBefore = new Date(Date.UTC(2026, 5, 1, 12, 0, 0));
    const refused = async (what: string, s: Signed, reason: RegExp, policy = bundlePolicy(root)) => expect(await check(s, policy), what).toEqual({ ok: false, why: expect.stringMatching(reason) });
    const chain = /CERTIFICATE_ERROR: Failed to verify certificate chain/;
    const timestamp = /TIMESTAMP_ERROR: timestamp could not be verified/;

    // After the certificate's 10 minutes, or before them.
    await refused('timestamped after the certificate expired', await keylessLayer(sigstore, { notBefore, time: new Date(notBefore.getTime() + 11 * 60_000) }), chain);
    await refused('timestamped before the certificate was issued', await keylessLayer(sigstore, { notBefore, time: new Date(notBefore.getTime() - 60_000) }), chain);
    // The imprint over something else: the payload (cosign stamps the signature), other bytes.
    await refused('imprint over the payload', await keylessLayer(sigstore, { stamp: async () => sigstore.timestamp(cosignPayload(`sha256:${'ab'.repeat(32)}`), new Date(notBefore.getTime() + 60_000)) }), timestamp);
    await refused('imprint over other bytes', await keylessLayer(sigstore, { stamp: async () => sigstore.timestamp(new Uint8Array([1, 2, 3]), new Date(notBefore.getTime() + 60_000)) }), timestamp);
    // A TSA the root does not name, and a root that names no TSA.
    const other = await testSigstore();
    await refused('another TSA', await keylessLayer(sigstore, { stamp: async (sig) => other.timestamp(sig, new Date(notBefore.getTime() + 60_000)) }), timestamp);
    // By the root's TSA, after its certificate expired (the TSA's chain is checked at the timestamp's time).
    const expiredTsa = await testSigstore({ tsaNotAfter: new Date(notBefore.getTime() + 30_000) });
    await refused('a TSA certificate expired', await keylessLayer(expiredTsa, { notBefore }), timestamp, bundlePolicy(await expiredTsa.trustedRoot()));
    await refused('a root without TSAs', await keylessLayer(sigstore), timestamp, bundlePolicy(await sigstore.trustedRoot({ withoutTsa: true })));
    // A TSA signature that does not verify: the last byte of the DER signature changed.
    await refused(
      'a tampered timestamp',
      await keylessLayer(sigstore, {
        stamp: async (sig) => {
          const der = await sigstore.timestamp(sig, new Date(notBefore.getTime() + 60_000));
          der[der.length - 1] = der.at(-1)! ^ 0x01;
          return der;
        },
      }),
      timestamp,
    );
    // No timestamp and no SET: there is no signing time at all.
    await refused('no timestamp', await keylessLayer(sigstore, { stamp: async () => undefined }), /expected 1 timestamps, got 0/);
    // The certificate without an SCT, and one by a CA the root does not name.
    await refused('no SCT', await keylessLayer(sigstore, { withoutSct: true }), /expected 1 SCTs, got 0/);
    await refused('a CA of another root', await keylessLayer(other, { stamp: async (sig) => sigstore.timestamp(sig, new Date(notBefore.getTime() + 60_000)) }), chain);
  });

  it('name a malformed annotation as such', async () => {
    const sigstore = await testSigstore();
    const root = await sigstore.trustedRoot();
    for (const annotation of ['not json', '{}', '{"SignedRFC3161Timestamp": 7}', '{"SignedRFC3161Timestamp": "%%%%"}', JSON.stringify({ SignedRFC3161Timestamp: 'A'.repeat(100_000) })]) {
      const signed = await keylessLayer(sigstore, { stamp: async () => annotation });
      expect(await check(signed, bundlePolicy(root)), annotation.slice(0, 40)).toEqual({ ok: false, why: 'the rfc3161timestamp annotation is not a SignedRFC3161Timestamp' });
    }
    // Base64 of something that is not a TimeStampResp: refused by the verifier, never thrown.
    const junk = await keylessLayer(sigstore, { stamp: async () => new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]) });
    expect(await check(junk, bundlePolicy(root))).toEqual({ ok: false, why: 'keyless signature: a certificate or timestamp in the bundle is not well-formed' });
  });

  it('with a Rekor SET too: both times must fall in the certificate, and a required log is still required', async () => {
    const sigstore = await testSigstore();
    const rekor = await generateSigner('ecdsa-p256');
    const root = await sigstore.trustedRoot({ tlogs: [rekor] });
    const both = await keylessLayer(sigstore, { rekor });
    expect(await check(both, bundlePolicy(root, { requireTransparencyLog: true }))).toMatchObject({ ok: true });
    // The timestamp outside the certificate fails even though the SET's time is inside.
    const late = await keylessLayer(sigstore, { rekor, time: new Date(Date.UTC(2026, 5, 1, 13, 0, 0)) });
    expect(await check(late, bundlePolicy(root, { requireTransparencyLog: true }))).toEqual({ ok: false, why: expect.stringMatching(/CERTIFICATE_ERROR: Failed to verify certificate chain/) });
    // A timestamp does not stand in for the log where the policy requires it.
    const timestampOnly = await keylessLayer(sigstore);
    expect(await check(timestampOnly, bundlePolicy(root, { requireTransparencyLog: true }))).toMatchObject({ ok: false, why: expect.stringMatching(/tlog/i) });
  });
});

describe('a keyless v0.3 bundle timestamped by an RFC 3161 authority (cosign v3 with --timestamp-server-url)', () => {
  it('verifies over the manifest without a log entry; another identity, a foreign TSA or another manifest is refused', async () => {
    const sigstore = await testSigstore();
    const root = await sigstore.trustedRoot();
    const manifest = image({ layers: [80] }).manifest;
    const notBefore = new Date(Date.UTC(2026, 5, 1, 12, 0, 0));
    const bundleBy = async (stamp: (signature: Uint8Array) => Promise<Uint8Array>) => {
      const key = await generateSigner('ecdsa-p256');
      const leaf = await sigstore.leaf(key, { email: EMAIL, issuer: ISSUER, notBefore });
      const signature = await key.sign(manifest.bytes);
      return {
        mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
        verificationMaterial: { certificate: { rawBytes: toBase64(leaf.der) }, tlogEntries: [], timestampVerificationData: { rfc3161Timestamps: [{ signedTimestamp: toBase64(await stamp(signature)) }] } },
        messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: Buffer.from(manifest.digest.slice(7), 'hex').toString('base64') }, signature: toBase64(signature) },
      };
    };
    const inTime = new Date(notBefore.getTime() + 60_000);
    const good = await bundleBy((sig) => sigstore.timestamp(sig, inTime));
    expect(await checkBundle(verifier, bundlePolicy(root), good, manifest.digest, manifest.bytes)).toEqual({ ok: true, how: `signed by ${EMAIL} (${ISSUER})` });
    expect(await checkBundle(verifier, bundlePolicy(root, { keyless: [{ issuer: ISSUER, subject: 'someone@else.test' }] }), good, manifest.digest, manifest.bytes)).toMatchObject({ ok: false, why: expect.stringMatching(/identity/) });
    const other = await testSigstore();
    const foreign = await bundleBy((sig) => other.timestamp(sig, inTime));
    expect(await checkBundle(verifier, bundlePolicy(root), foreign, manifest.digest, manifest.bytes)).toMatchObject({ ok: false, why: expect.stringMatching(/TIMESTAMP_ERROR/) });
    const another = image({ layers: [81] }).manifest;
    expect(await checkBundle(verifier, bundlePolicy(root), good, another.digest, another.bytes)).toEqual({ ok: false, why: 'the message signature is over another digest' });
  });
});

describe('the gate serving a keyless, timestamped image', () => {
  const gatePolicy = (trustedRoot: string, p: Partial<GatePolicy> = {}): GatePolicy => ({
    name: 'release-signed',
    repositories: ['team/*', 'registry.test/library/*'].map(compileGlob),
    mode: 'enforce',
    keys: [],
    keyless: [{ issuer: ISSUER, subject: EMAIL }],
    trustedRoot,
    requireTransparencyLog: false,
    children: true,
    verdictTtlMs: 60_000,
    ...p,
  });

  it('serves the image whose .sig layer carries the certificate and the timestamp; refuses it for another identity', async () => {
    const sigstore = await testSigstore();
    const root = await sigstore.trustedRoot();
    const serve = async (p: Partial<GatePolicy>) => {
      const t = testApp({}, { gate: { policies: [gatePolicy(root, p)], bundles: verifier } });
      const img = image({ layers: [70] });
      await t.pushImage('team/app', img, 'v1');
      const signed = await keylessLayer(sigstore, { digest: img.manifest.digest });
      const config = blob('{}', 'application/vnd.oci.image.config.v1+json');
      const manifest = blob(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers: [signed.layer] }), MediaType.OciManifest);
      await t.pushBlob('team/app', config);
      await t.pushBlob('team/app', blob(Buffer.from(signed.payload), signed.layer.mediaType));
      expect((await t.pushManifest('team/app', `sha256-${img.manifest.digest.slice(7)}.sig`, manifest)).status).toBe(201);
      return t.request('/v2/team/app/manifests/v1');
    };
    expect((await serve({})).status).toBe(200);
    const refused = await serve({ keyless: [{ issuer: ISSUER, subject: 'someone@else.test' }] });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('DENIED');
  });

  it('through the mirror: the .sig tag fetched from the upstream verifies; an image signed for another digest is refused', async () => {
    const sigstore = await testSigstore();
    const logged: Array<Record<string, unknown>> = [];
    const t = mirrorTest({ gate: { policies: [gatePolicy(await sigstore.trustedRoot())], bundles: verifier, log: (r) => logged.push(r) } });
    const signedImage = image({ layers: [72] });
    const other = image({ layers: [73] });
    t.up.addImage('library/app', 'v1', signedImage);
    t.up.addImage('library/app', 'v2', other);
    const config = blob('{}', 'application/vnd.oci.image.config.v1+json');
    t.up.addBlob('library/app', config.bytes);
    for (const [img, signedFor] of [[signedImage, signedImage], [other, signedImage]] as const) {
      const signed = await keylessLayer(sigstore, { digest: signedFor.manifest.digest });
      t.up.addBlob('library/app', Buffer.from(signed.payload));
      const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers: [signed.layer] });
      t.up.addManifest('library/app', `sha256-${img.manifest.digest.slice(7)}.sig`, manifest, MediaType.OciManifest);
    }
    expect((await t.request('/v2/up/library/app/manifests/v1')).status).toBe(200);
    expect((await t.request('/v2/up/library/app/manifests/v2')).status).toBe(403);
    expect(logged.at(-1)?.detail).toMatch(/^manifest-digest-mismatch/);
  });
});

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!hasOpenssl)('the test Sigstore read by another implementation (the openssl CLI)', () => {
  it('its TimeStampResp verifies with `openssl ts -verify`, its certificates with `openssl verify`; other data does not', async () => {
    const sigstore = await testSigstore();
    const key = await generateSigner('ecdsa-p256');
    const leaf = await sigstore.leaf(key, { email: EMAIL, issuer: ISSUER });
    const data = new TextEncoder().encode('the raw signature bytes');
    const dir = mkdtempSync(join(tmpdir(), 'outpost-tsa-'));
    try {
      const file = (name: string, content: string | Uint8Array) => (writeFileSync(join(dir, name), content), join(dir, name));
      const resp = file('resp.der', await sigstore.timestamp(data, new Date()));
      const args = ['ts', '-verify', '-in', resp, '-CAfile', file('tsa-root.pem', sigstore.tsaRoot.pem), '-untrusted', file('tsa.pem', sigstore.tsa.pem)];
      const run = (a: string[]) => execFileSync('openssl', a, { stdio: 'pipe' }).toString();
      expect(run([...args, '-data', file('data.bin', data)])).toMatch(/Verification: OK/);
      expect(() => run([...args, '-data', file('other.bin', 'other bytes')])).toThrow();
      expect(run(['verify', '-CAfile', file('ca.pem', sigstore.ca.pem), file('leaf.pem', leaf.pem)])).toMatch(/OK/);
      expect(run(['verify', '-CAfile', join(dir, 'tsa-root.pem'), '-purpose', 'timestampsign', join(dir, 'tsa.pem')])).toMatch(/OK/);
      // The SCT as a CT-aware parser reads it: one, by the test log.
      expect(run(['x509', '-in', join(dir, 'leaf.pem'), '-noout', '-text'])).toMatch(/CT Precertificate SCTs:[\s\S]*Signature : ecdsa-with-SHA256/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { SigstoreBundleVerifier } from '../../src/adapters/sigstore/bundle-verifier.js';
import { checkBundle, checkLegacyKeyless } from '../../src/core/gate/bundles.js';
import { TIMESTAMP_ANNOTATION } from '../../src/core/gate/simple-signing.js';
import worker from '../../src/entry/workers.js';
import { cosignPayload, generateSigner, signatureLayer, toBase64 } from '../support/cosign-sign.js';
import { image, type Blob } from '../support/images.js';
import { bundleReferrer, dsseBundle, statement } from '../support/sigstore-bundles.js';
import { testSigstore } from '../support/sigstore-pki.js';

/**
 * Sigstore bundles inside workerd: @sigstore/verify on workerd's node:crypto (nodejs_compat),
 * whose `verify(undefined, ...)` the adapter makes explicit for EC and RSA keys. The real
 * keyless bundles of ../shared/cosign-fixtures (read at transform time by import.meta.glob) when
 * present, and through the Worker's own fetch a policy with keys and keyless identities (the
 * shipped public-good root), an image signed by a DSSE bundle referrer served, an unsigned one refused;
 * a keyless `.sig` layer timestamped by an RFC 3161 authority of a test Sigstore (sigstore-pki.ts).
 */

const files = import.meta.glob<string>(['../../../shared/cosign-fixtures/conformance-happy-path-v0.3/*', '../../../shared/cosign-fixtures/cosign-oci-bundle-v0.3-dsse/*'], {
  eager: true,
  query: '?raw',
  import: 'default',
});
const file = (dir: string, name: string) => Object.entries(files).find(([k]) => k.endsWith(`/${dir}/${name}`))?.[1];
const sha256 = async (text: string) => {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
  return `sha256:${[...d].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
};
const verifier = new SigstoreBundleVerifier();

describe.skipIf(!file('conformance-happy-path-v0.3', 'bundle.sigstore.json'))('real keyless bundles, verified in workerd', () => {
  it('cosign-oci-bundle-v0.3-dsse: chain, SCT, Rekor entry and DSSE signature verify', async () => {
    const dir = 'cosign-oci-bundle-v0.3-dsse';
    const verdict = await verifier.verify({ bundle: JSON.parse(file(dir, 'bundle.sigstore.json')!), trustedRoot: file(dir, 'trusted_root.json'), keys: [], requireTransparencyLog: true });
    expect(verdict).toEqual({ ok: true, signer: { kind: 'certificate', subject: 'cody@soyland.com', issuer: 'https://github.com/login/oauth' } });
  });

  it('conformance happy-path-v0.3: the identity matches; another subject is refused', async () => {
    const dir = 'conformance-happy-path-v0.3';
    const artifact = file(dir, 'a.txt')!;
    const issuer = 'https://token.actions.githubusercontent.com';
    const policy = (subjectPattern: RegExp) => ({ keys: [], keyless: [{ issuer, subjectPattern }], requireTransparencyLog: true, trustedRoot: file(dir, 'trusted_root.json') });
    const check = async (p: ReturnType<typeof policy>) => checkBundle(verifier, p, JSON.parse(file(dir, 'bundle.sigstore.json')!), await sha256(artifact), new TextEncoder().encode(artifact));
    expect(await check(policy(/^(?:https:\/\/github\.com\/sigstore-conformance\/.*)$/))).toMatchObject({ ok: true });
    expect(await check(policy(/^(?:https:\/\/github\.com\/myorg\/.*)$/))).toMatchObject({ ok: false });
  });
});

describe('a bundle-signed image through the Worker', () => {
  it('serves an image whose DSSE bundle referrer is by the policy key, refuses an unsigned one', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const repo = `workerd/${crypto.randomUUID().slice(0, 8)}/bundles`;
    const pem = signer.pem.trim().split('\n').map((l) => `          ${l}`).join('\n');
    const config =
      'policies:\n  - name: release-signed\n    repositories: ["workerd/*/bundles"]\n    keys:\n      - pem: |\n' +
      `${pem}\n    keyless:\n      - issuer: https://token.actions.githubusercontent.com\n        subjectPattern: "https://github\\\\.com/myorg/.*"\n    requireTransparencyLog: false\n`;
    const gateEnv = { ...env, OUTPOST_CONFIG: config };
    const request = (path: string, init?: RequestInit) => worker.fetch(new Request(`http://outpost.test${path}`, init), gateEnv, {});
    const pushBlob = async (b: Blob) => expect((await request(`/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes) })).status).toBe(201);
    const pushManifest = async (m: Blob, ref: string) => {
      const res = await request(`/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: new Uint8Array(m.bytes), headers: { 'Content-Type': m.mediaType } });
      expect(res.status, await res.text()).toBe(201);
    };
    const signed = image({ layers: [70] });
    const unsigned = image({ layers: [71] });
    for (const [img, tag] of [[signed, 'v1'], [unsigned, 'v2']] as const) {
      for (const b of [img.config, ...img.layers]) await pushBlob(b);
      await pushManifest(img.manifest, tag);
    }
    const ref = bundleReferrer(await dsseBundle(signer, statement(signed.manifest.digest)), signed.manifest);
    await pushBlob(ref.config);
    await pushBlob(ref.layer);
    await pushManifest(ref.manifest, ref.manifest.digest);
    const res = await request(`/v2/${repo}/manifests/v1`);
    expect(res.status, await res.text()).toBe(200);
    const refused = await request(`/v2/${repo}/manifests/v2`);
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain('"release-signed"');
  });
});

describe('a keyless .sig layer with an RFC 3161 timestamp, verified in workerd', () => {
  it('chain at the timestamp, SCT, timestamp and identity verify; a timestamp after the certificate expired is refused', async () => {
    const sigstore = await testSigstore();
    const policy = { keys: [], keyless: [{ issuer: 'https://issuer.outpost.test', subject: 'release@outpost.test' }], trustedRoot: await sigstore.trustedRoot(), requireTransparencyLog: false };
    const digest = `sha256:${'ab'.repeat(32)}`;
    const notBefore = new Date(Date.UTC(2026, 5, 1, 12, 0, 0));
    const layerAt = async (time: Date) => {
      const key = await generateSigner('ecdsa-p256');
      const leaf = await sigstore.leaf(key, { email: 'release@outpost.test', issuer: 'https://issuer.outpost.test', notBefore });
      const payload = cosignPayload(digest);
      const signature = await key.sign(payload);
      const stamp = JSON.stringify({ SignedRFC3161Timestamp: toBase64(await sigstore.timestamp(signature, time)) });
      return { payload, layer: await signatureLayer(payload, signature, { 'dev.sigstore.cosign/certificate': leaf.pem, [TIMESTAMP_ANNOTATION]: stamp }) };
    };
    const inside = await layerAt(new Date(notBefore.getTime() + 60_000));
    expect(await checkLegacyKeyless(verifier, policy, inside.layer, inside.payload, digest)).toEqual({ ok: true, how: 'signed by release@outpost.test (https://issuer.outpost.test)' });
    const late = await layerAt(new Date(notBefore.getTime() + 20 * 60_000));
    expect(await checkLegacyKeyless(verifier, policy, late.layer, late.payload, digest)).toMatchObject({ ok: false, why: expect.stringMatching(/certificate chain/) });
  });
});

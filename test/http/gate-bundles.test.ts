import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SigstoreBundleVerifier } from '../../src/adapters/sigstore/bundle-verifier.js';
import { attachedBundles, checkBundle, legacyBundle, signedContent, type KeylessIdentity } from '../../src/core/gate/bundles.js';
import type { GatePolicy } from '../../src/core/gate/gate.js';
import { compileGlob } from '../../src/core/glob.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { testApp } from '../support/app.js';
import { generateSigner, type TestSigner } from '../support/cosign-sign.js';
import { blob, image, sha256 } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';
import { bundleReferrer, dsseBundle, messageBundle, statement } from '../support/sigstore-bundles.js';

/**
 * Sigstore bundles and keyless identities at the gate (core/gate/bundles.ts over
 * adapters/sigstore): bundles attached as cosign v3 attaches them (referrers, else the
 * sha256-<hex> index), hosted and mirrored, DSSE and message signatures, an attestation refused
 * as a signature; and the real bundles of ../shared/cosign-fixtures (keyless, public good),
 * verified with identities that match and identities that do not.
 */

const verifier = new SigstoreBundleVerifier();

const policy = (p: Partial<GatePolicy> = {}): GatePolicy => ({
  name: 'release-signed',
  repositories: ['team/*', 'registry.test/library/*'].map(compileGlob),
  mode: 'enforce',
  keys: [],
  requireTransparencyLog: false,
  children: true,
  verdictTtlMs: 60_000,
  ...p,
});
const keyPolicy = (signer: TestSigner, p: Partial<GatePolicy> = {}) => policy({ keys: [{ label: 'key0', pem: signer.pem }], ...p });

async function denied(res: Response, name = 'release-signed') {
  expect(res.status).toBe(403);
  expect(await res.text()).toContain(`"${name}"`);
}

describe('Sigstore bundles attached to hosted images', () => {
  it('serves an image with a DSSE bundle of cosign sign by the key; refuses an attestation, another subject, another key', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const stranger = await generateSigner('ecdsa-p256');
    const logged: Array<Record<string, unknown>> = [];
    const t = testApp({}, { gate: { policies: [keyPolicy(signer)], bundles: verifier, log: (r) => logged.push(r) } });
    const cases = [
      { tag: 'signed', bundle: (d: string) => dsseBundle(signer, statement(d)), ok: true },
      { tag: 'attested', bundle: (d: string) => dsseBundle(signer, statement(d, 'https://slsa.dev/provenance/v1')), why: /an attestation/ },
      { tag: 'other-subject', bundle: () => dsseBundle(signer, statement(`sha256:${'a'.repeat(64)}`)), why: /another digest/ },
      { tag: 'other-key', bundle: (d: string) => dsseBundle(stranger, statement(d)), why: /none of the policy's 1 key/ },
    ];
    for (const [i, c] of cases.entries()) {
      const img = image({ layers: [40 + i] });
      await t.pushImage('team/app', img, c.tag);
      const ref = bundleReferrer(await c.bundle(img.manifest.digest), img.manifest);
      await t.pushBlob('team/app', ref.config);
      await t.pushBlob('team/app', ref.layer);
      expect((await t.pushManifest('team/app', ref.manifest.digest, ref.manifest)).status).toBe(201);
      const res = await t.request(`/v2/team/app/manifests/${c.tag}`);
      if (c.ok) expect(res.status, await res.text()).toBe(200);
      else {
        await denied(res);
        expect(String(logged.at(-1)?.detail)).toMatch(c.why!);
      }
      // The bundle's own manifest is a signature artifact: served ungated.
      expect((await t.request(`/v2/team/app/manifests/${ref.manifest.digest}`)).status).toBe(200);
    }
  });

  it('serves an image with a message-signature bundle over its manifest; a sha256-<hex> index naming a bundle of another digest is refused', async () => {
    const signer = await generateSigner('ecdsa-p384', { hash: 'SHA-256' }); // messageDigest is SHA2_256
    const logged: Array<Record<string, unknown>> = [];
    const t = testApp({}, { gate: { policies: [keyPolicy(signer)], bundles: verifier, log: (r) => logged.push(r) } });
    const img = image({ layers: [50] });
    await t.pushImage('team/app', img, 'v1');
    const ref = bundleReferrer(await messageBundle(signer, img.manifest.bytes), img.manifest);
    await t.pushBlob('team/app', ref.config);
    await t.pushBlob('team/app', ref.layer);
    expect((await t.pushManifest('team/app', ref.manifest.digest, ref.manifest)).status).toBe(201);
    const indexDoc = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ mediaType: MediaType.OciManifest, digest: ref.manifest.digest, size: ref.manifest.size, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }] });
    const other = image({ layers: [51] });
    await t.pushImage('team/app', other, 'v2');
    // `other` has no referrer of its own; its sha256-<hex> index names img's bundle, which signs another digest.
    expect((await t.pushManifest('team/app', `sha256-${other.manifest.digest.slice(7)}`, blob(indexDoc, MediaType.OciIndex))).status).toBe(201);
    const res = await t.request('/v2/team/app/manifests/v1');
    expect(res.status, JSON.stringify(logged)).toBe(200);
    await denied(await t.request('/v2/team/app/manifests/v2'));
    expect(String(logged.at(-1)?.detail)).toMatch(/another digest/);
  });
});

describe('Sigstore bundles attached to mirrored images', () => {
  it.each([true, false])('referrers API %s: a bundle-signed image served, an unsigned one refused', async (referrersApi) => {
    const signer = await generateSigner('ecdsa-p256');
    const t = mirrorTest({ upstream: { referrersApi }, gate: { policies: [keyPolicy(signer)], bundles: verifier } });
    const signed = image({ layers: [60] });
    const unsigned = image({ layers: [61] });
    t.up.addImage('library/app', 'v1', signed);
    t.up.addImage('library/app', 'v2', unsigned);
    const ref = bundleReferrer(await dsseBundle(signer, statement(signed.manifest.digest)), signed.manifest);
    t.up.addBlob('library/app', ref.config.bytes);
    t.up.addBlob('library/app', ref.layer.bytes);
    t.up.addManifest('library/app', undefined, ref.manifest.bytes, MediaType.OciManifest);
    if (!referrersApi) {
      const index = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ mediaType: MediaType.OciManifest, digest: ref.manifest.digest, size: ref.manifest.size, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }] });
      t.up.addManifest('library/app', `sha256-${signed.manifest.digest.slice(7)}`, index, MediaType.OciIndex);
    }
    expect((await t.request('/v2/up/library/app/manifests/v1')).status).toBe(200);
    await denied(await t.request('/v2/up/library/app/manifests/v2'));
  });
});

/** ../shared/cosign-fixtures (real cosign and Sigstore conformance bundles), when present. */
const FIXTURES = resolve(import.meta.dirname, '../../../shared/cosign-fixtures');
const fixture = (dir: string, file: string) => readFileSync(join(FIXTURES, dir, file));
const has = (dir: string) => existsSync(join(FIXTURES, dir, 'bundle.sigstore.json'));

const BEACON = 'https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main';
const GITHUB_ACTIONS = 'https://token.actions.githubusercontent.com';

describe.skipIf(!has('cosign-oci-bundle-v0.3-dsse'))('cosign-oci-bundle-v0.3-dsse (VALID bundle; an attestation: a signature only for a policy whose predicateTypes name it)', () => {
  const dir = 'cosign-oci-bundle-v0.3-dsse';
  const identity: KeylessIdentity = { issuer: 'https://github.com/login/oauth', subject: 'cody@soyland.com' };

  it('verifies (chain, SCT, Rekor entry, DSSE signature, identity) and names the served digest', async () => {
    const bundle = JSON.parse(fixture(dir, 'bundle.sigstore.json').toString());
    const manifest = fixture(dir, 'manifest.json.reconstructed');
    const trustedRoot = fixture(dir, 'trusted_root.json').toString();
    const verdict = await verifier.verify({ bundle, trustedRoot, keys: [], requireTransparencyLog: true });
    expect(verdict).toEqual({ ok: true, signer: { kind: 'certificate', subject: 'cody@soyland.com', issuer: 'https://github.com/login/oauth' } });
    expect(signedContent(bundle, sha256(manifest))).toMatch(/^an attestation \(predicate type https:\/\/cosign.sigstore.dev\/attestation\/v1\)/);
    expect(signedContent(bundle, `sha256:${'0'.repeat(64)}`)).toBe('the in-toto statement is about another digest');
  });

  it('through the mirror, as cosign attached it (a referrer): refused, because an attestation alone is not a signature', async () => {
    const logged: Array<Record<string, unknown>> = [];
    const trustedRoot = fixture(dir, 'trusted_root.json').toString();
    const t = mirrorTest({ gate: { policies: [policy({ keyless: [identity], trustedRoot, requireTransparencyLog: true })], bundles: verifier, log: (r) => logged.push(r) } });
    const manifest = fixture(dir, 'manifest.json.reconstructed');
    const mediaType = JSON.parse(manifest.toString()).mediaType as string;
    t.up.addManifest('library/app', 'v1', manifest, mediaType);
    const ref = bundleReferrer(JSON.parse(fixture(dir, 'bundle.sigstore.json').toString()), { digest: sha256(manifest), size: manifest.length, mediaType, bytes: manifest });
    // The fixture's exact bytes as the layer.
    const layerBytes = fixture(dir, 'bundle.sigstore.json');
    const layer = { digest: sha256(layerBytes), size: layerBytes.length };
    const doc = JSON.parse(ref.manifest.bytes.toString());
    doc.layers[0] = { ...doc.layers[0], ...layer };
    t.up.addBlob('library/app', ref.config.bytes);
    t.up.addBlob('library/app', layerBytes);
    t.up.addManifest('library/app', undefined, JSON.stringify(doc), MediaType.OciManifest);
    await denied(await t.request('/v2/up/library/app/manifests/v1'));
    expect(String(logged.at(-1)?.detail)).toMatch(/an attestation/);
  });

  it('through the mirror: served by a policy that takes the attestation type as proof (predicateTypes), refused for another identity', async () => {
    const trustedRoot = fixture(dir, 'trusted_root.json').toString();
    const predicateTypes = ['https://sigstore.dev/cosign/sign/v1', 'https://cosign.sigstore.dev/attestation/v1'];
    const serve = async (id: KeylessIdentity) => {
      const t = mirrorTest({ gate: { policies: [policy({ keyless: [id], trustedRoot, requireTransparencyLog: true, predicateTypes })], bundles: verifier } });
      const manifest = fixture(dir, 'manifest.json.reconstructed');
      const mediaType = JSON.parse(manifest.toString()).mediaType as string;
      t.up.addManifest('library/app', 'v1', manifest, mediaType);
      const ref = bundleReferrer(JSON.parse(fixture(dir, 'bundle.sigstore.json').toString()), { digest: sha256(manifest), size: manifest.length, mediaType, bytes: manifest });
      const layerBytes = fixture(dir, 'bundle.sigstore.json');
      const doc = JSON.parse(ref.manifest.bytes.toString());
      doc.layers[0] = { ...doc.layers[0], digest: sha256(layerBytes), size: layerBytes.length };
      t.up.addBlob('library/app', ref.config.bytes);
      t.up.addBlob('library/app', layerBytes);
      t.up.addManifest('library/app', undefined, JSON.stringify(doc), MediaType.OciManifest);
      return t.request('/v2/up/library/app/manifests/v1');
    };
    const ok = await serve(identity);
    expect(ok.status).toBe(200);
    expect(sha256(Buffer.from(await ok.arrayBuffer()))).toBe(sha256(fixture(dir, 'manifest.json.reconstructed')));
    await denied(await serve({ issuer: identity.issuer, subject: 'someone@else.example' }));
  });
});

describe.skipIf(!has('conformance-happy-path-v0.3'))('Sigstore conformance bundles (message signatures over a.txt)', () => {
  // The "manifest" is a.txt: checkBundle needs only its bytes and digest.
  const artifact = (dir: string) => fixture(dir, 'a.txt');
  const root = (dir: string) => fixture(dir, 'trusted_root.json').toString();
  const check = (dir: string, p: Partial<GatePolicy>) =>
    checkBundle(verifier, { keys: [], keyless: [], requireTransparencyLog: true, trustedRoot: root(dir), ...p }, JSON.parse(fixture(dir, 'bundle.sigstore.json').toString()), sha256(artifact(dir)), artifact(dir));

  it('happy-path-v0.3 (VALID, keyless): the identity exactly or by pattern; another issuer, subject or pattern refused', async () => {
    const dir = 'conformance-happy-path-v0.3';
    expect(await check(dir, { keyless: [{ issuer: GITHUB_ACTIONS, subject: BEACON }] })).toMatchObject({ ok: true });
    expect(await check(dir, { keyless: [{ issuer: GITHUB_ACTIONS, subjectPattern: /^(?:https:\/\/github\.com\/sigstore-conformance\/.*@refs\/heads\/main)$/ }] })).toMatchObject({ ok: true });
    for (const id of [
      { issuer: 'https://accounts.google.com', subject: BEACON },
      { issuer: GITHUB_ACTIONS, subject: `${BEACON}x` },
      { issuer: GITHUB_ACTIONS, subjectPattern: /^(?:https:\/\/github\.com\/myorg\/.*)$/ },
      { issuer: GITHUB_ACTIONS, subjectPattern: /^(?:extremely-dangerous)$/ },
    ]) {
      expect(await check(dir, { keyless: [id] }), JSON.stringify(id)).toMatchObject({ ok: false, why: expect.stringMatching(/identity/) });
    }
    // A keys-only policy never accepts a certificate.
    expect(await check(dir, {})).toMatchObject({ ok: false });
    // Another artifact: the message signature is over another digest.
    expect(await checkBundle(verifier, { keys: [], keyless: [{ issuer: GITHUB_ACTIONS, subject: BEACON }], requireTransparencyLog: true, trustedRoot: root(dir) }, JSON.parse(fixture(dir, 'bundle.sigstore.json').toString()), sha256('x'), Buffer.from('x'))).toMatchObject({ ok: false, why: 'the message signature is over another digest' });
  });

  it.skipIf(!has('conformance-managed-key-happy-path'))('managed-key-happy-path (VALID with key.pub; refused with another key)', async () => {
    const dir = 'conformance-managed-key-happy-path';
    const pem = fixture(dir, 'key.pub').toString();
    expect(await check(dir, { keys: [{ label: 'key.pub', pem }] })).toEqual({ ok: true, how: 'signed by key.pub' });
    expect(await check(dir, { keys: [{ label: 'other', pem: (await generateSigner('ecdsa-p256')).pem }] })).toMatchObject({ ok: false });
  });

  it.skipIf(!has('conformance-signature-mismatch_fail'))('signature-mismatch_fail (REJECT)', async () => {
    const dir = 'conformance-signature-mismatch_fail';
    const verdict = await check(dir, { keyless: [{ issuer: GITHUB_ACTIONS, subjectPattern: /^(?:.*)$/ }] });
    expect(verdict).toMatchObject({ ok: false });
  });

  it('a legacy keyless .sig layer (certificate and Rekor SET annotations) converts to a bundle that verifies as cosign verifies it', async () => {
    // The happy path's certificate, signature and log entry, as cosign's legacy annotations.
    const dir = 'conformance-happy-path-v0.3';
    const b = JSON.parse(fixture(dir, 'bundle.sigstore.json').toString());
    const entry = b.verificationMaterial.tlogEntries[0];
    const pem = `-----BEGIN CERTIFICATE-----\n${b.verificationMaterial.certificate.rawBytes.match(/.{1,64}/g).join('\n')}\n-----END CERTIFICATE-----\n`;
    const set = JSON.stringify({
      SignedEntryTimestamp: entry.inclusionPromise.signedEntryTimestamp,
      Payload: { body: entry.canonicalizedBody, integratedTime: Number(entry.integratedTime), logIndex: Number(entry.logIndex), logID: Buffer.from(entry.logId.keyId, 'base64').toString('hex') },
    });
    const payload = artifact(dir);
    const annotations = { 'dev.cosignproject.cosign/signature': b.messageSignature.signature, 'dev.sigstore.cosign/certificate': pem, 'dev.sigstore.cosign/bundle': set };
    const layer = { mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest: sha256(payload), size: payload.length, annotations };
    const bundle = await legacyBundle(layer, payload);
    const request = { bundle, artifact: payload, trustedRoot: root(dir), keys: [], requireTransparencyLog: true };
    expect(await verifier.verify(request)).toEqual({ ok: true, signer: { kind: 'certificate', subject: BEACON, issuer: GITHUB_ACTIONS } });
    // Without the SET there is no signing time to check the certificate at: refused (cosign would ask Rekor).
    const { 'dev.sigstore.cosign/bundle': _, ...withoutSet } = annotations;
    expect(await verifier.verify({ ...request, bundle: await legacyBundle({ ...layer, annotations: withoutSet }, payload) })).toMatchObject({ ok: false });
    // Another payload: the signature and the log entry are not over it.
    expect(await verifier.verify({ ...request, artifact: Buffer.from('other') })).toMatchObject({ ok: false });
  });
});

describe('finding bundles', () => {
  it('reads the referrers, then the sha256-<hex> index, keeping only bundle artifact types', async () => {
    const digest = `sha256:${'b'.repeat(64)}`;
    const index = (types: string[]) => new TextEncoder().encode(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: types.map((artifactType, i) => ({ mediaType: MediaType.OciManifest, digest: `sha256:${String(i).repeat(64)}`, size: 1, artifactType })) }));
    const source = (referrers: Uint8Array | undefined, tagged: Uint8Array | undefined) => ({
      referrers: async () => referrers,
      tagged: async () => tagged,
      manifestAt: async () => undefined,
      blob: async () => undefined,
    });
    expect(await attachedBundles(source(index(['application/vnd.dev.cosign.artifact.sig.v1+json', 'application/vnd.dev.sigstore.bundle.v0.3+json']), undefined), digest)).toEqual([`sha256:${'1'.repeat(64)}`]);
    expect(await attachedBundles(source(index([]), index(['application/vnd.dev.sigstore.bundle+json;version=0.2'])), digest)).toEqual([`sha256:${'0'.repeat(64)}`]);
    expect(await attachedBundles(source(undefined, undefined), digest)).toEqual([]);
  });
});

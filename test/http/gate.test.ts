import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileGlob } from '../../src/core/glob.js';
import type { GatePolicy } from '../../src/core/gate/gate.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { publicGoodTrustedRoot } from '../../src/entry/public-good.js';
import { createApp } from '../../src/http/app.js';
import type { AccessRecord } from '../../src/http/access-log.js';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { createRegistry } from '../../src/core/registry/registry.js';
import { testApp, TestClock } from '../support/app.js';
import { cosignPayload, generateSigner, signatureLayer, type TestSigner } from '../support/cosign-sign.js';
import { blob, image, sha256, type Blob, type Image } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';

/**
 * The signature gate (src/core/gate/gate.ts) through app.request(): signed images served,
 * unsigned and wrongly signed ones refused with 403 DENIED naming the policy, on hosted and
 * mirrored repositories, by tag and by digest, GET and HEAD; signature artifacts ungated; warn
 * mode; verdicts cached; an index signed at the top serving its children; and the real cosign
 * signatures of ../shared/cosign-fixtures served from an upstream through the mirror.
 */

const policy = (signers: TestSigner[], p: Partial<GatePolicy> = {}): GatePolicy => ({
  name: 'release-signed',
  repositories: ['team/*', 'registry.test/library/*'].map(compileGlob),
  mode: 'enforce',
  keys: signers.map((s, i) => ({ label: `key${i}`, pem: s.pem })),
  requireTransparencyLog: false,
  children: true,
  verdictTtlMs: 60_000,
  ...p,
});

/** The cosign signature manifest of `digest`: one simple-signing layer by `signer` (payload and manifest as cosign writes them). */
async function signature(signer: TestSigner, digest: string) {
  const payload = cosignPayload(digest);
  const layer = await signatureLayer(payload, await signer.sign(payload));
  const config = blob('{}', 'application/vnd.oci.image.config.v1+json');
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: [layer],
  });
  return { payload: blob(Buffer.from(payload), layer.mediaType), config, manifest: blob(manifest, MediaType.OciManifest), tag: `sha256-${digest.slice(7)}.sig` };
}

type Hosted = ReturnType<typeof testApp>;

async function pushSignature(t: Hosted, name: string, sig: Awaited<ReturnType<typeof signature>>) {
  await t.pushBlob(name, sig.config);
  await t.pushBlob(name, sig.payload);
  expect((await t.pushManifest(name, sig.tag, sig.manifest)).status).toBe(201);
}

async function denied(res: Response, policyName: string) {
  expect(res.status).toBe(403);
  const text = await res.text();
  // A HEAD's refusal has no body.
  if (text !== '') {
    const body = JSON.parse(text) as { errors: Array<{ code: string; message: string; detail?: unknown }> };
    expect(body.errors[0]!.code).toBe('DENIED');
    expect(body.errors[0]!.message).toContain(`"${policyName}"`);
    expect(JSON.stringify(body)).not.toMatch(/signature-invalid|no signature/);
  }
}

describe('the signature gate on hosted repositories', () => {
  it('serves a signed image and refuses an unsigned one, by tag and digest, GET and HEAD', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const t = testApp({}, { gate: { policies: [policy([signer])] } });
    const signed = image({ layers: [10] });
    const unsigned = image({ layers: [11] });
    await t.pushImage('team/app', signed, 'v1');
    await t.pushImage('team/app', unsigned, 'v2');
    await pushSignature(t, 'team/app', await signature(signer, signed.manifest.digest));
    for (const method of ['GET', 'HEAD']) {
      for (const ref of ['v1', signed.manifest.digest]) expect((await t.request(`/v2/team/app/manifests/${ref}`, { method })).status).toBe(200);
      for (const ref of ['v2', unsigned.manifest.digest]) await denied(await t.request(`/v2/team/app/manifests/${ref}`, { method }), 'release-signed');
    }
    // The signature itself is served, and nothing outside the policy's globs is gated.
    expect((await t.request(`/v2/team/app/manifests/sha256-${signed.manifest.digest.slice(7)}.sig`)).status).toBe(200);
    await t.pushImage('other/app', unsigned, 'v2');
    expect((await t.request('/v2/other/app/manifests/v2')).status).toBe(200);
  });

  it('refuses an ordinary image tagged like a signature: only signature artifacts pass ungated', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const t = testApp({}, { gate: { policies: [policy([signer])] } });
    const img = image({ layers: [19] });
    await t.pushImage('team/app', img, `sha256-${'ab'.repeat(32)}.sig`);
    await denied(await t.request(`/v2/team/app/manifests/sha256-${'ab'.repeat(32)}.sig`), 'release-signed');
  });

  it('refuses an image that only claims to be a signature: by artifactType, or bytes that read as an index of artifacts', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const t = testApp({}, { gate: { policies: [policy([signer])] } });
    const img = image({ layers: [22] });
    for (const b of [img.config, ...img.layers]) await t.pushBlob('team/app', b);
    const body = JSON.parse(img.manifest.bytes.toString()) as Record<string, unknown>;
    const claimed = blob(JSON.stringify({ ...body, artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json' }), MediaType.OciManifest);
    expect((await t.pushManifest('team/app', 'claimed', claimed)).status).toBe(201);
    await denied(await t.request('/v2/team/app/manifests/claimed'), 'release-signed');
    // No mediaType in the body: stored and served as an image manifest (the Content-Type), with a
    // `manifests` list of "artifacts" that an index reading would take for the tag schema.
    const { mediaType: _, ...untyped } = body;
    const confused = blob(JSON.stringify({ ...untyped, manifests: [{ mediaType: MediaType.OciManifest, digest: img.config.digest, size: 1, artifactType: 'x/y' }] }), MediaType.OciManifest);
    const res = await t.request('/v2/team/app/manifests/confused', { method: 'PUT', body: new Uint8Array(confused.bytes), headers: { 'Content-Type': MediaType.OciManifest } });
    if (res.status === 201) await denied(await t.request('/v2/team/app/manifests/confused'), 'release-signed');
  });

  it.each(['ecdsa-p384', 'ed25519', 'rsa-pkcs1', 'rsa-pss'] as const)('accepts a %s key', async (algorithm) => {
    const signer = await generateSigner(algorithm);
    const t = testApp({}, { gate: { policies: [policy([signer])] } });
    const img = image({ layers: [12] });
    await t.pushImage('team/app', img, 'v1');
    await pushSignature(t, 'team/app', await signature(signer, img.manifest.digest));
    expect((await t.request('/v2/team/app/manifests/v1')).status).toBe(200);
  });

  it('refuses a signature by another key, and a valid signature of another digest', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const stranger = await generateSigner('ecdsa-p256');
    const t = testApp({}, { gate: { policies: [policy([signer])] } });
    const a = image({ layers: [13] });
    const b = image({ layers: [14] });
    await t.pushImage('team/a', a, 'v1');
    await pushSignature(t, 'team/a', await signature(stranger, a.manifest.digest));
    await denied(await t.request('/v2/team/a/manifests/v1'), 'release-signed');
    // b's tag holds a's (valid) signature: it says a's digest, not b's.
    await t.pushImage('team/b', b, 'v1');
    const forA = await signature(signer, a.manifest.digest);
    await t.pushBlob('team/b', forA.config);
    await t.pushBlob('team/b', forA.payload);
    expect((await t.pushManifest('team/b', `sha256-${b.manifest.digest.slice(7)}.sig`, forA.manifest)).status).toBe(201);
    await denied(await t.request('/v2/team/b/manifests/v1'), 'release-signed');
  });

  it('in warn mode serves what fails and logs it', async () => {
    const signer = await generateSigner('ed25519');
    const logged: Array<Record<string, unknown>> = [];
    const t = testApp({}, { gate: { policies: [policy([signer], { mode: 'warn' })], log: (r) => logged.push(r) } });
    await t.pushImage('team/app', image({ layers: [15] }), 'v1');
    expect((await t.request('/v2/team/app/manifests/v1')).status).toBe(200);
    expect(logged).toMatchObject([{ msg: 'signature gate', policy: 'release-signed', result: 'warned' }]);
  });

  it('notes its decision in the access record', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const t = testApp({}, { gate: { policies: [policy([signer])] } });
    const records: AccessRecord[] = [];
    const app = createApp({ registry: t.registry, accessLog: (r) => records.push(r) });
    const signed = image({ layers: [23] });
    const unsigned = image({ layers: [24] });
    await t.pushImage('team/app', signed, 'v1');
    await t.pushImage('team/app', unsigned, 'v2');
    await pushSignature(t, 'team/app', await signature(signer, signed.manifest.digest));
    await (await app.request('/v2/team/app/manifests/v1')).arrayBuffer();
    await (await app.request('/v2/team/app/manifests/v2')).arrayBuffer();
    await (await app.request('/v2/team/app/blobs/' + signed.config.digest)).arrayBuffer();
    expect(records.map((r) => [r.status, r.gate])).toEqual([
      [200, 'allowed:release-signed'],
      [403, 'denied:release-signed'],
      [200, undefined],
    ]);
  });

  it('keeps a verdict: a second pull reads no signature from the store', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const t = testApp({}, { gate: { policies: [policy([signer])] } });
    const img = image({ layers: [16] });
    await t.pushImage('team/app', img, 'v1');
    const sig = await signature(signer, img.manifest.digest);
    await pushSignature(t, 'team/app', sig);
    expect((await t.request('/v2/team/app/manifests/v1')).status).toBe(200);
    const get = t.store.get.bind(t.store);
    const read: string[] = [];
    t.store.get = (async (...args: Parameters<typeof get>) => {
      read.push(args[0]);
      return get(...args);
    }) as typeof get;
    expect((await t.request('/v2/team/app/manifests/v1')).status).toBe(200);
    expect((await t.request('/v2/team/app/manifests/v1', { method: 'HEAD' })).status).toBe(200);
    // Only the manifest's own bytes for the GET: no signature manifest, no payload.
    expect(read).toHaveLength(1);
  });

  it('an index signed at the top serves its children, and every policy naming a repository must be met', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const other = await generateSigner('ecdsa-p256');
    const t = testApp({}, { gate: { policies: [policy([signer])] } });
    const { amd, arm, list } = await t.pushIndex('team/multi', [17, 18]);
    await pushSignature(t, 'team/multi', await signature(signer, list.digest));
    // A child asked first is refused (it has no signature of its own); after its index, served.
    await denied(await t.request(`/v2/team/multi/manifests/${amd.manifest.digest}`), 'release-signed');
    expect((await t.request('/v2/team/multi/manifests/v1')).status).toBe(200);
    t.clock.advance(31_000); // past the refusal's shorter life
    for (const m of [amd, arm]) expect((await t.request(`/v2/team/multi/manifests/${m.manifest.digest}`)).status).toBe(200);

    const both = testApp({}, { gate: { policies: [policy([signer]), policy([other], { name: 'second-key' })] } });
    await both.pushImage('team/app', amd, 'v1');
    await pushSignature(both, 'team/app', await signature(signer, amd.manifest.digest));
    await denied(await both.request('/v2/team/app/manifests/v1'), 'second-key');
  });
});

describe('reads of a gated GET', () => {
  it('with two policies the signatures are read once, not once per policy', async () => {
    const [first, second] = [await generateSigner('ecdsa-p256'), await generateSigner('ecdsa-p256')];
    /** Store reads of one cold gated GET under `policies`, the image signed by both keys (one layer each). */
    const reads = async (policies: GatePolicy[]) => {
      const t = testApp({}, { gate: { policies } });
      const img = image({ layers: [31] });
      await t.pushImage('team/app', img, 'v1');
      const payload = cosignPayload(img.manifest.digest);
      const layers = [await signatureLayer(payload, await first.sign(payload)), await signatureLayer(payload, await second.sign(payload))];
      const config = blob('{}', 'application/vnd.oci.image.config.v1+json');
      await t.pushBlob('team/app', config);
      await t.pushBlob('team/app', blob(Buffer.from(payload), layers[0]!.mediaType));
      const manifest = blob(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers }), MediaType.OciManifest);
      expect((await t.pushManifest('team/app', `sha256-${img.manifest.digest.slice(7)}.sig`, manifest)).status).toBe(201);
      let count = 0;
      const get = t.store.get.bind(t.store);
      t.store.get = (...args) => (count++, get(...args));
      expect((await t.request('/v2/team/app/manifests/v1')).status).toBe(200);
      return count;
    };
    const one = await reads([policy([first])]);
    const two = await reads([policy([first]), policy([second], { name: 'second-key' })]);
    expect(two).toBe(one);
  });
});

describe('verdicts shared through the index', () => {
  it('are keyed by what a policy trusts: an instance with another key under the same policy name does not take them', async () => {
    const [old, rotated] = [await generateSigner('ecdsa-p256'), await generateSigner('ecdsa-p256')];
    const clock = new TestClock();
    const store = new MemoryBlobStore(clock);
    const index = new MemoryMetaIndex(clock);
    const instance = (signer: TestSigner) => createApp({ registry: createRegistry({ store, index, hash: nodeHash, clock, gate: { policies: [policy([signer])] } }) });
    const before = instance(old);
    const img = image({ layers: [32] });
    for (const b of [img.config, ...img.layers]) await before.request(`/v2/team/app/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes) });
    await before.request('/v2/team/app/manifests/v1', { method: 'PUT', body: new Uint8Array(img.manifest.bytes), headers: { 'Content-Type': img.manifest.mediaType } });
    const sig = await signature(old, img.manifest.digest);
    for (const b of [sig.config, sig.payload]) await before.request(`/v2/team/app/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes) });
    await before.request(`/v2/team/app/manifests/${sig.tag}`, { method: 'PUT', body: new Uint8Array(sig.manifest.bytes), headers: { 'Content-Type': MediaType.OciManifest } });
    expect((await before.request('/v2/team/app/manifests/v1')).status).toBe(200);
    // The verdict the first instance wrote is in the index; the key was rotated on the second.
    await denied(await instance(rotated).request('/v2/team/app/manifests/v1'), 'release-signed');
    expect((await instance(old).request('/v2/team/app/manifests/v1')).status).toBe(200);
  });
});

describe('a signature that cannot be fetched', () => {
  it('is a 5xx under an enforced policy (clients retry) and served with a log line under a warn one', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const run = async (mode: 'enforce' | 'warn') => {
      const logged: Array<Record<string, unknown>> = [];
      const t = testApp({}, { gate: { policies: [policy([signer], { mode })], log: (r) => logged.push(r) } });
      const img = image({ layers: [33] });
      await t.pushImage('team/app', img, 'v1');
      await pushSignature(t, 'team/app', await signature(signer, img.manifest.digest));
      // The store fails every read of the signature's payload.
      const get = t.store.get.bind(t.store);
      const payloadDigest = (await signature(signer, img.manifest.digest)).payload.digest;
      t.store.get = (key, range) => (key.includes(payloadDigest.slice(7)) ? Promise.reject(new Error('injected: store down')) : get(key, range));
      return { res: await t.request('/v2/team/app/manifests/v1'), logged };
    };
    const enforced = await run('enforce');
    expect(enforced.res.status).toBeGreaterThanOrEqual(500);
    const warned = await run('warn');
    expect(warned.res.status).toBe(200);
    expect(JSON.stringify(warned.logged)).toMatch(/could not be verified: injected: store down/);
  });
});

describe('the signature gate on mirrored repositories', () => {
  it('serves what the upstream signed, refuses what it did not, and fetches signatures through the mirror', async () => {
    const signer = await generateSigner('ecdsa-p256');
    const t = mirrorTest({ gate: { policies: [policy([signer])] } });
    const signed = image({ layers: [20] });
    const unsigned = image({ layers: [21] });
    t.up.addImage('library/app', 'v1', signed);
    t.up.addImage('library/app', 'v2', unsigned);
    const sig = await signature(signer, signed.manifest.digest);
    t.up.addBlob('library/app', sig.config.bytes);
    t.up.addBlob('library/app', sig.payload.bytes);
    t.up.addManifest('library/app', sig.tag, sig.manifest.bytes, MediaType.OciManifest);
    expect((await t.request('/v2/up/library/app/manifests/v1')).status).toBe(200);
    await denied(await t.request('/v2/up/library/app/manifests/v2'), 'release-signed');
    expect((await t.request(`/v2/up/library/app/manifests/${signed.manifest.digest}`, { method: 'HEAD' })).status).toBe(200);
  });
});

/** ../shared/cosign-fixtures (real cosign and skopeo signatures), when present. */
const FIXTURES = resolve(import.meta.dirname, '../../../shared/cosign-fixtures');
const legacy = existsSync(FIXTURES) ? readdirSync(FIXTURES).filter((d) => d.startsWith('ci-')) : [];

describe.skipIf(legacy.length === 0)('real cosign signatures served from an upstream through the mirror', () => {
  /** Which key each fixture's README names, and whether its Rekor SET is to be required. */
  const cases: Record<string, { key: string; valid: boolean; rekor?: boolean }> = {
    'ci-key-valid': { key: 'cosign.pub', valid: true },
    'ci-key-valid-skopeo-tag': { key: 'cosign.pub', valid: true },
    'ci-key-rekor-valid': { key: 'cosign2.pub', valid: true, rekor: true },
    'ci-key-modified-manifest_fail': { key: 'cosign.pub', valid: false },
    'ci-unknown-key_fail': { key: 'cosign.pub', valid: false },
    'ci-other-attachment_fail': { key: 'cosign.pub', valid: false },
  };

  it('has an expectation for every legacy fixture', () => {
    expect(legacy.filter((d) => !(d in cases))).toEqual([]);
  });

  it.each(Object.keys(cases).filter((d) => legacy.includes(d)))('%s', async (fixture) => {
    const dir = join(FIXTURES, fixture);
    const c = cases[fixture]!;
    const keyFile = existsSync(join(dir, c.key)) ? join(dir, c.key) : join(FIXTURES, 'ci-key-valid', c.key);
    const pem = readFileSync(keyFile, 'utf8');
    const gatePolicy = policy([], { keys: [{ label: c.key, pem }], requireTransparencyLog: c.rekor === true, trustedRoot: c.rekor ? rekorRoot(dir) : undefined });
    const t = mirrorTest({ gate: { policies: [gatePolicy] } });
    const manifest = readFileSync(join(dir, 'manifest.json'));
    const digest = sha256(manifest);
    const payload = readFileSync(join(dir, 'payload.json'));
    const annotations = JSON.parse(readFileSync(join(dir, 'annotations.json'), 'utf8')) as Record<string, string>;
    const mediaType = readFileSync(join(dir, 'layer-mediatype.txt'), 'utf8').trim();
    t.up.addManifest('library/app', 'v1', manifest, JSON.parse(manifest.toString()).mediaType ?? MediaType.DockerManifest);
    t.up.addBlob('library/app', payload);
    const config = blob('{}', 'application/vnd.oci.image.config.v1+json');
    t.up.addBlob('library/app', config.bytes);
    const sigManifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: [{ mediaType, digest: sha256(payload), size: payload.length, annotations }],
    });
    t.up.addManifest('library/app', `sha256-${digest.slice(7)}.sig`, sigManifest, MediaType.OciManifest);
    const res = await t.request('/v2/up/library/app/manifests/v1');
    if (c.valid) expect(res.status, await res.text()).toBe(200);
    else await denied(res, 'release-signed');
  });
});

/** A trusted root for the fixture's own Rekor key (rekor.pub), in the trusted_root.json shape. */
function rekorRoot(dir: string): string {
  const file = join(dir, 'rekor.pub');
  if (!existsSync(file)) return publicGoodTrustedRoot();
  const der = Buffer.from(readFileSync(file, 'utf8').replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return JSON.stringify({ tlogs: [{ baseUrl: 'https://rekor.sigstore.dev', publicKey: { rawBytes: der.toString('base64') } }] });
}

export type { Blob, Image };

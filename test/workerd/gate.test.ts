import { env } from 'cloudflare:workers';
import { beforeAll, describe, expect, it } from 'vitest';
import { MediaType } from '../../src/core/oci/media-types.js';
import worker from '../../src/entry/workers.js';
import { cosignPayload, generateSigner, signatureLayer, type TestSigner } from '../support/cosign-sign.js';
import { blob, image, type Blob, type Image } from '../support/images.js';

/**
 * The signature gate inside workerd, through the Worker's own fetch over the real S3 and
 * DynamoDB: a policy in OUTPOST_CONFIG with a key made here by workerd's WebCrypto (inline PEM,
 * the only way on Workers), a signed image served, an unsigned one refused with DENIED naming the
 * policy, the signature itself served. The configuration also loads the shipped public-good
 * trusted root, as every policy does.
 */

const repo = `workerd/${crypto.randomUUID().slice(0, 8)}/gate`;
let signer: TestSigner;
let gateEnv: Record<string, unknown>;

beforeAll(async () => {
  signer = await generateSigner('ecdsa-p256');
  const pem = signer.pem.trim().split('\n').map((l) => `          ${l}`).join('\n');
  const config = `policies:\n  - name: release-signed\n    repositories: ["workerd/*/gate"]\n    keys:\n      - pem: |\n${pem}\n    requireTransparencyLog: false\n`;
  gateEnv = { ...env, OUTPOST_CONFIG: config };
});

function request(path: string, init?: RequestInit): Promise<Response> {
  return worker.fetch(new Request(`http://outpost.test${path}`, init), gateEnv, {});
}

async function pushBlob(b: Blob): Promise<void> {
  const res = await request(`/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes) });
  expect(res.status, await res.text()).toBe(201);
}

async function pushManifest(m: Blob, tag: string): Promise<void> {
  const res = await request(`/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: new Uint8Array(m.bytes), headers: { 'Content-Type': m.mediaType } });
  expect(res.status, await res.text()).toBe(201);
}

async function pushImage(img: Image, tag: string): Promise<void> {
  for (const b of [img.config, ...img.layers]) await pushBlob(b);
  await pushManifest(img.manifest, tag);
}

describe('the signature gate on Workers', () => {
  it('serves a signed image, refuses an unsigned one, and serves the signature itself', async () => {
    const signed = image({ layers: [30] });
    const unsigned = image({ layers: [31] });
    await pushImage(signed, 'v1');
    await pushImage(unsigned, 'v2');
    const payload = cosignPayload(signed.manifest.digest);
    const layer = await signatureLayer(payload, await signer.sign(payload));
    const config = blob('{}', 'application/vnd.oci.image.config.v1+json');
    await pushBlob(config);
    await pushBlob(blob(Buffer.from(payload), layer.mediaType));
    const tag = `sha256-${signed.manifest.digest.slice(7)}.sig`;
    const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers: [layer] });
    await pushManifest(blob(manifest, MediaType.OciManifest), tag);

    for (const method of ['GET', 'HEAD']) expect((await request(`/v2/${repo}/manifests/v1`, { method })).status).toBe(200);
    const refused = await request(`/v2/${repo}/manifests/v2`);
    expect(refused.status).toBe(403);
    const body = (await refused.json()) as { errors: Array<{ code: string; message: string }> };
    expect(body.errors[0]).toMatchObject({ code: 'DENIED', message: expect.stringContaining('"release-signed"') });
    expect((await request(`/v2/${repo}/manifests/${tag}`)).status).toBe(200);
  });
});

import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { createRegistry, type GateOptions, type RegistryOptions } from '../../src/core/registry/registry.js';
import type { Auth } from '../../src/core/auth/auth.js';
import type { ConnectionInfo } from '../../src/http/access-log.js';
import type { AuditSink } from '../../src/http/audit.js';
import type { MetaIndex } from '../../src/ports/meta-index.js';
import { createApp } from '../../src/http/app.js';
import { TestClock } from './clock.js';
import { image, index as imageIndex, type Blob, type Image } from './images.js';

export { TestClock };

/**
 * An Outpost app over in-memory adapters, driven through app.request(). `connection` stands in
 * for the runtime's (entry/node-server.ts nodeConnection reads what app.request's env passes).
 */
export function testApp(options: Partial<RegistryOptions> = {}, http: { connection?: ConnectionInfo; gate?: GateOptions; auth?: Promise<Auth>; audit?: AuditSink; index?: MetaIndex } = {}) {
  const clock = new TestClock();
  const store = new MemoryBlobStore(clock);
  const index = http.index ?? new MemoryMetaIndex(clock);
  const registry = createRegistry({ store, index, hash: nodeHash, clock, options, gate: http.gate });
  const app = createApp({ registry, connection: http.connection, auth: http.auth, audit: http.audit });
  const request = (path: string, init?: RequestInit) => app.request(path, init);

  async function pushBlob(name: string, b: Blob): Promise<Response> {
    const res = await request(`/v2/${name}/blobs/uploads/?digest=${b.digest}`, {
      method: 'POST',
      body: new Uint8Array(b.bytes),
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(b.size) },
    });
    if (res.status !== 201) throw new Error(`push blob ${b.digest}: ${res.status} ${await res.text()}`);
    return res;
  }

  async function pushManifest(name: string, reference: string, m: Blob): Promise<Response> {
    return request(`/v2/${name}/manifests/${reference}`, {
      method: 'PUT',
      body: new Uint8Array(m.bytes),
      headers: { 'Content-Type': m.mediaType },
    });
  }

  async function pushImage(name: string, img: Image, reference = 'latest'): Promise<Response> {
    for (const b of [img.config, ...img.layers]) await pushBlob(name, b);
    const res = await pushManifest(name, reference, img.manifest);
    if (res.status !== 201) throw new Error(`push manifest: ${res.status} ${await res.text()}`);
    return res;
  }

  /** Two images pushed by digest, and a two-platform index of them pushed as `tag`. */
  async function pushIndex(name: string, layers: [number, number], tag = 'v1') {
    const amd = image({ layers: [layers[0]] });
    const arm = image({ layers: [layers[1]] });
    await pushImage(name, amd, amd.manifest.digest);
    await pushImage(name, arm, arm.manifest.digest);
    const list = imageIndex([
      { manifest: amd.manifest, arch: 'amd64' },
      { manifest: arm.manifest, arch: 'arm64' },
    ]);
    const res = await pushManifest(name, tag, list);
    if (res.status !== 201) throw new Error(`push index: ${res.status} ${await res.text()}`);
    return { amd, arm, list };
  }

  return { app, request, clock, store, index, registry, pushBlob, pushManifest, pushImage, pushIndex };
}

export async function errorCode(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as { errors?: Array<{ code: string }> };
  return body.errors?.[0]?.code;
}

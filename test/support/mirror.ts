import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { RegistryUpstream } from '../../src/adapters/upstream/registry-upstream.js';
import type { MirrorConfig, UpstreamConfig } from '../../src/core/mirror/config.js';
import { Metrics } from '../../src/core/metrics.js';
import { createRegistry, type GateOptions, type RegistryOptions } from '../../src/core/registry/registry.js';
import type { Auth } from '../../src/core/auth/auth.js';
import type { AccessLogSink, ConnectionInfo } from '../../src/http/access-log.js';
import type { AuditSink } from '../../src/http/audit.js';
import { createApp } from '../../src/http/app.js';
import type { BlobStore } from '../../src/ports/blob-store.js';
import type { MetaIndex } from '../../src/ports/meta-index.js';
import { TestClock } from './clock.js';
import { FakeUpstream, type FakeUpstreamOptions } from './fake-upstream.js';

/**
 * Outpost instances mirroring a scripted fake upstream (test/support/fake-upstream.ts) through
 * the real upstream client, all over one in-memory store and index, driven through
 * app.request(). Several instances share nothing but the store and the index, like stateless
 * workers, so cross-instance single flight is tested here without processes.
 */
export function upstreamConfig(overrides: Partial<UpstreamConfig> = {}): UpstreamConfig {
  return {
    name: 'up',
    url: 'https://registry.test',
    namespace: 'registry.test',
    default: false,
    tagTtlMs: 60_000,
    maxStaleMs: 3_600_000,
    content: { allow: [], deny: [] },
    ...overrides,
  };
}

export interface MirrorTestOptions {
  upstream?: FakeUpstreamOptions;
  /** Signature policies (the gate). */
  gate?: GateOptions;
  config?: Partial<UpstreamConfig>;
  hosted?: string[];
  instances?: number;
  partBytes?: number;
  leaseMs?: number;
  fillMemoryBytes?: number;
  store?: BlobStore;
  index?: MetaIndex;
  options?: Partial<RegistryOptions>;
  /** The runtime's view of each connection (see test/support/app.ts). */
  connection?: ConnectionInfo;
  /** Authentication and authorisation (src/core/auth), and where audit records go. */
  auth?: Promise<Auth>;
  audit?: AuditSink;
  accessLog?: AccessLogSink;
  /** The runtime never detaches what responses and stores are handed (Node; MirrorDeps.runtimeKeepsBuffers). */
  runtimeKeepsBuffers?: boolean;
}

export function mirrorTest(options: MirrorTestOptions = {}) {
  const clock = new TestClock();
  const up = new FakeUpstream({ host: 'registry.test', ...options.upstream });
  const store = options.store ?? new MemoryBlobStore();
  const index = options.index ?? new MemoryMetaIndex(clock);
  const upstream = upstreamConfig({ url: up.url, namespace: up.host, ...options.config });
  const config: MirrorConfig = {
    upstreams: [upstream],
    hosted: options.hosted ?? [],
    fillPartBytes: options.partBytes ?? 64 * 1024,
    fillLeaseMs: options.leaseMs ?? 30_000,
    fillMemoryBytes: options.fillMemoryBytes ?? 64 * 1024 * 1024,
  };
  /** Every instance's fill events (FillsOptions.log), in order, with the instance that wrote each. */
  const fillLog: Array<{ instance: string; level: string; msg: string; digest: string } & Record<string, unknown>> = [];
  const instances = Array.from({ length: options.instances ?? 1 }, (_, i) => {
    const metrics = new Metrics();
    const client = new RegistryUpstream({ url: up.url, fetch: up.fetch, clock, sleep: () => new Promise((r) => setTimeout(r, 0)), random: () => 0 });
    const registry = createRegistry({
      store,
      index,
      hash: nodeHash,
      clock,
      options: options.options,
      mirror: {
        config,
        upstreams: new Map([[upstream.name, client]]),
        metrics,
        instance: `i${i}`,
        runtimeKeepsBuffers: options.runtimeKeepsBuffers,
        sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 5))),
        log: (level, fields) => fillLog.push({ instance: `i${i}`, level, ...fields }),
      },
      gate: options.gate,
    });
    const app = createApp({ registry, metrics: true, connection: options.connection, auth: options.auth, audit: options.audit, accessLog: options.accessLog });
    return { registry, app, metrics, request: (path: string, init?: RequestInit) => app.request(path, init) };
  });
  const first = instances[0]!;
  /** Blob GETs the upstream served for `digest` (redirects and ranges included). */
  const blobGets = (digest: string) => up.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`));
  return { clock, up, store, index, config, instances, request: first.request, metrics: first.metrics, blobGets, fillLog };
}

/** Takes over (detaches) a chunk's buffer, as workerd does with the bodies it is handed. */
export function detach(chunk: Uint8Array): void {
  structuredClone(chunk.buffer, { transfer: [chunk.buffer] });
}

/** An in-memory store that detaches every buffer `put` is given, after keeping a copy. */
export function detachingStore(): MemoryBlobStore {
  const inner = new MemoryBlobStore();
  return Object.assign(Object.create(inner) as MemoryBlobStore, {
    put: async (key: string, body: ReadableStream<Uint8Array>, size?: number) => {
      const copies: Uint8Array[] = [];
      const reader = body.getReader();
      for (;;) {
        const next = await reader.read();
        if (next.done) break;
        copies.push(next.value.slice());
        detach(next.value);
      }
      return inner.put(key, new Blob(copies as BlobPart[]).stream(), size);
    },
  });
}

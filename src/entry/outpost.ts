import { nodeHash } from '../adapters/crypto/node-hash.js';
import { SigstoreBundleVerifier } from '../adapters/sigstore/bundle-verifier.js';
import { RegistryUpstream } from '../adapters/upstream/registry-upstream.js';
import { Auth } from '../core/auth/auth.js';
import { Metrics } from '../core/metrics.js';
import type { MirrorConfig } from '../core/mirror/config.js';
import { createRegistry } from '../core/registry/registry.js';
import type { AccessRecord, ConnectionInfo } from '../http/access-log.js';
import type { AuditRecord, AuditSink } from '../http/audit.js';
import { createApp } from '../http/app.js';
import type { BlobStore } from '../ports/blob-store.js';
import { systemClock } from '../ports/clock.js';
import type { MetaIndex } from '../ports/meta-index.js';
import type { Upstream } from '../ports/upstream.js';
import type { Config } from './config.js';
import type { Log } from './log.js';

export interface OutpostOptions {
  /** Serve /metrics (Node); Workers log the counters instead. */
  metricsRoute: boolean;
  /** The one way out to upstreams; the runtime's fetch by default. */
  fetch?: typeof fetch;
  /** The structured log (access records, upstream events); nothing is logged without one. */
  log?: Log;
  /** The runtime's view of each connection, for the access log (src/http/access-log.ts). */
  connection?: ConnectionInfo;
  /** The runtime never takes over the buffers a response sends or a store writes (see MirrorDeps.runtimeKeepsBuffers). */
  runtimeKeepsBuffers?: boolean;
  /** Where audit records go; by default the structured log, as lines with msg "audit". */
  audit?: AuditSink;
}

/** The Outpost HTTP app over a store and an index, as every entry point builds it. */
export function outpostApp(config: Config, adapters: { store: BlobStore; index: MetaIndex }, options: OutpostOptions = { metricsRoute: false }) {
  const { log } = options;
  const metrics = new Metrics();
  const registry = createRegistry({
    ...adapters,
    hash: nodeHash,
    clock: systemClock,
    options: {
      uploadTtlMs: config.uploadTtlSeconds * 1000,
      redirectSeconds: config.redirectSeconds,
      chunkMinLength: config.chunkMinBytes,
      maxBlobBytes: config.maxBlobBytes,
      immutableTags: config.immutableTags,
    },
    mirror: { config: config.mirror, upstreams: upstreamClients(config.mirror, options.fetch ?? fetch, log), metrics, runtimeKeepsBuffers: options.runtimeKeepsBuffers, log: log ? (level, fields) => log.write(level, fields) : undefined },
    gate: { policies: config.policies, bundles: config.policies.length > 0 ? new SigstoreBundleVerifier() : undefined, log: (record) => log?.write(record.result === 'denied' ? 'warn' : 'info', record) },
  });
  // Off below info: no record is even built.
  const accessLog = log?.enabled('info') ? (record: AccessRecord) => log.write('info', record) : undefined;
  // The audit log is written whatever the level (only `off` silences it): its own lines, msg "audit".
  const audit = options.audit ?? (log ? (record: AuditRecord) => log.always(record) : undefined);
  const auth = config.auth ? Auth.create(config.auth) : undefined;
  // Awaited by the entry point (Node) or by the first request (Workers); never left unhandled.
  auth?.catch(() => undefined);
  return { app: createApp({ registry, metrics: options.metricsRoute, accessLog, connection: options.connection, auth, audit }), metrics, registry, auth };
}

/** Upstream events that mean something went wrong or is unsafe; the rest are routine. */
const WARN_EVENTS = new Set(['upstream.retry', 'upstream.realm-insecure']);

/** One upstream client per configured upstream. */
export function upstreamClients(config: MirrorConfig, f: typeof fetch, log?: Log): Map<string, Upstream> {
  const clients = new Map<string, Upstream>();
  for (const u of config.upstreams) {
    clients.set(
      u.name,
      new RegistryUpstream({
        url: u.url,
        credentials: u.credentials,
        fetch: f,
        log: (event) => log?.write(WARN_EVENTS.has(String(event.event)) ? 'warn' : 'info', { msg: 'upstream', upstream: u.name, ...event }),
      }),
    );
  }
  return clients;
}

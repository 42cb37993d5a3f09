/**
 * The `mirror:` section of the configuration document: how blob fills from upstreams are cut
 * into parts and how long a fill's lease lasts (src/core/mirror/config.ts has the defaults and
 * why they are what they are).
 */
import { DEFAULT_FILL_LEASE_MS, DEFAULT_FILL_PART_BYTES, DEFAULT_LOCAL_FILL_PART_BYTES } from '../../core/mirror/config.js';
import { child, duration, field, mapping, size, type SectionContext, type StoreKind } from './values.js';

const MIRROR_KEYS = ['fillPartSize', 'fillLease', 'fillMemory'] as const;

/** S3's smallest part of a multipart compose (every part but the last). */
const MIN_S3_FILL_PART_BYTES = 5 * 1024 * 1024;
/** The embedded store composes parts of any size; below 1 MiB a part's file and index write cost more than its bytes. */
const MIN_LOCAL_FILL_PART_BYTES = 1024 * 1024;
/** Each fill holds two parts in memory; this bounds that per concurrent fill (a Worker has 128 MB). */
const MAX_FILL_PART_BYTES = 64 * 1024 * 1024;
/** Heartbeats run at a third of the lease: shorter than 5s and a slow store write loses it. */
const MIN_FILL_LEASE_MS = 5_000;
/** A crashed leader's fill is taken over after its lease; waiting longer than 10m helps nobody. */
const MAX_FILL_LEASE_MS = 10 * 60_000;

/** Fill buffers beyond 1 GiB per instance would mean a part size or a machine this was not designed for. */
const MAX_FILL_MEMORY_BYTES = 1024 * 1024 * 1024;

export interface FillSettings {
  fillPartBytes: number;
  fillLeaseMs: number;
  fillMemoryBytes: number;
}

/**
 * Fill buffers a Node server holds by default: sixteen fills of two 8 MiB parts (S3), or
 * sixty-four of two 2 MiB parts (the embedded store), so that several images' layers fill at once.
 */
const NODE_FILL_MEMORY_BYTES = 256 * 1024 * 1024;
/**
 * A Workers isolate has 128 MB in all, and the S3 store's own part buffers (48 MiB by default,
 * src/adapters/s3/blob-store.ts) come on top of the fills': two fills at once, 32 MiB.
 */
const WORKERS_FILL_MEMORY_BYTES = 32 * 1024 * 1024;

function defaultFillMemory(runtime: 'node' | 'workers'): number {
  return runtime === 'workers' ? WORKERS_FILL_MEMORY_BYTES : NODE_FILL_MEMORY_BYTES;
}

/** The default and the smallest part of a fill on each store (src/core/mirror/config.ts says why). */
function partBounds(store: StoreKind): { fallback: number; min: number } {
  return store === 'local' ? { fallback: DEFAULT_LOCAL_FILL_PART_BYTES, min: MIN_LOCAL_FILL_PART_BYTES } : { fallback: DEFAULT_FILL_PART_BYTES, min: MIN_S3_FILL_PART_BYTES };
}

export function defaultFillSettings(runtime: 'node' | 'workers', store: StoreKind): FillSettings {
  return { fillPartBytes: partBounds(store).fallback, fillLeaseMs: DEFAULT_FILL_LEASE_MS, fillMemoryBytes: defaultFillMemory(runtime) };
}

export function readMirror(value: unknown, path: string, ctx: SectionContext): FillSettings {
  const entries = mapping(value, path, ctx.problems, { known: MIRROR_KEYS });
  if (!entries) return defaultFillSettings(ctx.runtime, ctx.store);
  const parts = partBounds(ctx.store);
  const fillPartBytes = size(field(entries, 'fillPartSize'), child(path, 'fillPartSize'), ctx.problems, {
    min: parts.min,
    max: MAX_FILL_PART_BYTES,
    fallback: parts.fallback,
  });
  const fillLeaseMs = duration(field(entries, 'fillLease'), child(path, 'fillLease'), ctx.problems, {
    min: MIN_FILL_LEASE_MS,
    max: MAX_FILL_LEASE_MS,
    fallback: DEFAULT_FILL_LEASE_MS,
  });
  // A fill holds two parts (one filling, one being written): room for one fill at least. The
  // default grows with a large part size; a budget set below that is refused.
  const memory = field(entries, 'fillMemory');
  const fillMemoryBytes = size(memory, child(path, 'fillMemory'), ctx.problems, {
    min: 2 * parts.min,
    max: MAX_FILL_MEMORY_BYTES,
    fallback: Math.max(defaultFillMemory(ctx.runtime), 2 * fillPartBytes),
  });
  if (memory !== undefined && fillMemoryBytes < 2 * fillPartBytes) {
    ctx.problems.at(child(path, 'fillMemory'), `must hold at least two parts of fillPartSize (${2 * fillPartBytes} bytes)`);
  }
  const settings = { fillPartBytes, fillLeaseMs, fillMemoryBytes };
  return settings;
}

import type { Json, MetaIndex } from '../../ports/meta-index.js';
import type { Clock } from '../../ports/clock.js';
import { OciError } from '../errors.js';
import { parseDigest } from '../oci/digest.js';
import type { Blobs } from '../registry/blobs.js';
import { keys } from '../registry/keys.js';
import { allItems } from '../registry/pages.js';
import type { ManifestRecord, Manifests } from '../registry/manifests.js';
import type { MirrorConfig } from './config.js';

/**
 * Retention of mirrored content: what a mirror cached and nobody pulled for a while is evicted,
 * and when the cache is over its size budget, what was pulled least recently goes first. The
 * unit is one cached item: a blob linked into a mirrored repository, or a mirrored manifest. An
 * eviction removes the item (an unlink, a manifest DELETE with its tags); garbage collection then
 * deletes the bytes once nothing else references them, and the next pull is a clean miss that
 * fills again from the upstream. Mirrored manifests name nothing (manifests.ts): a layer evicted
 * while its manifest stays is refilled on demand.
 *
 * Last-pulled times (index: pulled#<name> / <digest> -> { at }):
 *   a cached pull touches its item: written at most once per TOUCH_INTERVAL_MS per item and
 *   instance (an in-memory map of what this instance wrote), best effort and off the request's
 *   path: never one write per GET. An item with no time yet (never pulled from the cache since
 *   it was cached) is given the time of the first retention pass that sees it.
 *
 * A pass (`retain`), with the run of garbage collection:
 *   for each mirrored repository in the catalog: its links and manifest records, with their times
 *   evict what was last pulled before now - maxAge
 *   if a budget is set: the bytes of the rest (each digest counted once, whichever repositories
 *   hold it) over the budget -> evict digests least recently pulled first until within it
 * It reads every cached item's record once per pass: its cost grows with the cache, not with the
 * hosted content (unlike a collection, which reads only its candidates). A pass that dies half
 * way evicted some items; the next pass goes on. Many passes at once evict the same items twice,
 * which is harmless (an unlink of what is gone is a miss). Content also linked into a hosted
 * repository keeps its bytes, though the pass counts them as freed.
 */

/** A cached pull writes its item's time at most this often per instance. */
export const TOUCH_INTERVAL_MS = 5 * 60_000;
/** Items whose last write this instance remembers (a bounded map: forgetting one costs one write more). */
const TOUCH_MEMORY = 50_000;

export interface RetentionPolicy {
  /** Evict what nobody pulled for this long. */
  maxAgeMs?: number;
  /** Keep the mirrored bytes within this many; the least recently pulled go first. */
  budgetBytes?: number;
}

export interface RetentionReport {
  /** Cached items looked at (links and manifests of mirrored repositories). */
  items: number;
  /** Distinct bytes cached before the pass. */
  cachedBytes: number;
  evicted: { age: number; budget: number };
  /** Distinct bytes of what was evicted. */
  evictedBytes: number;
}

export interface RetentionDeps {
  index: MetaIndex;
  clock: Clock;
  blobs: Blobs;
  manifests: Manifests;
  config: MirrorConfig;
}

export interface CachedItem {
  name: string;
  digest: string;
  kind: 'blob' | 'manifest';
  size: number;
  at: number;
}

export const pulledKey = (name: string, digest: string) => ({ pk: `pulled#${name}`, sk: digest });

/** Remembers what this instance wrote, so that a pull touches the index at most once per interval. */
export class Touches {
  private readonly written = new Map<string, number>();

  constructor(
    private readonly index: MetaIndex,
    private readonly clock: Clock,
  ) {}

  /** Notes a cached pull of `digest` in `name`; the write, when one is due, is not awaited. */
  touch(name: string, digest: string): void {
    const id = `${name}@${digest}`;
    const now = this.clock.now();
    const last = this.written.get(id);
    if (last !== undefined && now - last < TOUCH_INTERVAL_MS) return;
    this.written.delete(id);
    this.written.set(id, now);
    if (this.written.size > TOUCH_MEMORY) this.written.delete(this.written.keys().next().value!);
    void this.index.put(pulledKey(name, digest), { at: now }).catch(() => this.written.delete(id));
  }
}

/** Whether a catalog name is a mirrored repository (`<namespace>/<repository>`, routing.ts). */
export function isMirrored(config: MirrorConfig, name: string): boolean {
  return config.upstreams.some((u) => name.startsWith(`${u.namespace}/`));
}

export interface RetainOptions {
  /** Evict nothing; report what a pass would evict. */
  dryRun?: boolean;
  onEvict?: (item: CachedItem, reason: 'age' | 'budget') => void;
}

export async function retain(deps: RetentionDeps, policy: RetentionPolicy, options: RetainOptions = {}): Promise<RetentionReport> {
  const report: RetentionReport = { items: 0, cachedBytes: 0, evicted: { age: 0, budget: 0 }, evictedBytes: 0 };
  if (policy.maxAgeMs === undefined && policy.budgetBytes === undefined) return report;
  const now = deps.clock.now();
  const cached = await listCached(deps, now, options.dryRun ?? false);
  report.items = cached.length;
  const sizes = new Map<string, number>();
  for (const c of cached) sizes.set(c.digest, c.size);
  report.cachedBytes = sum(sizes);

  const evict = async (c: CachedItem, reason: 'age' | 'budget') => {
    report.evicted[reason]++;
    options.onEvict?.(c, reason);
    if (!options.dryRun) await evictItem(deps, c);
  };
  const kept: CachedItem[] = [];
  const gone = new Set<string>();
  for (const c of cached) {
    if (policy.maxAgeMs !== undefined && now - c.at > policy.maxAgeMs) await evict(c, 'age');
    else kept.push(c);
  }
  const keptDigests = new Set(kept.map((c) => c.digest));
  for (const d of sizes.keys()) if (!keptDigests.has(d)) gone.add(d);

  if (policy.budgetBytes !== undefined) {
    // Per digest: the latest pull of it in any repository, and every item holding it.
    const byDigest = new Map<string, { at: number; items: CachedItem[] }>();
    for (const c of kept) {
      const entry = byDigest.get(c.digest) ?? { at: -Infinity, items: [] };
      entry.at = Math.max(entry.at, c.at);
      entry.items.push(c);
      byDigest.set(c.digest, entry);
    }
    let total = [...byDigest.keys()].reduce((n, d) => n + sizes.get(d)!, 0);
    const oldestFirst = [...byDigest.entries()].sort((a, b) => a[1].at - b[1].at || (a[0] < b[0] ? -1 : 1));
    for (const [digest, entry] of oldestFirst) {
      if (total <= policy.budgetBytes) break;
      for (const c of entry.items) await evict(c, 'budget');
      total -= sizes.get(digest)!;
      gone.add(digest);
    }
  }
  report.evictedBytes = [...gone].reduce((n, d) => n + sizes.get(d)!, 0);
  return report;
}

/** Every cached item of every mirrored repository, with its last-pulled time (written now where it had none). */
async function listCached(deps: RetentionDeps, now: number, dryRun: boolean): Promise<CachedItem[]> {
  const out: CachedItem[] = [];
  for await (const repo of allItems<Json>(deps.index, keys.reposPartition)) {
    const name = repo.sk;
    if (!isMirrored(deps.config, name)) continue;
    const pulled = new Map<string, number>();
    for await (const p of allItems<{ at: number }>(deps.index, pulledKey(name, '').pk)) pulled.set(p.sk, p.item.value.at);
    const found: CachedItem[] = [];
    for await (const l of allItems<{ size: number }>(deps.index, keys.blobLink(name, '').pk)) found.push({ name, digest: l.sk, kind: 'blob', size: l.item.value.size, at: pulled.get(l.sk) ?? NaN });
    for await (const m of allItems<ManifestRecord & Json>(deps.index, keys.manifest(name, '').pk)) found.push({ name, digest: m.sk, kind: 'manifest', size: m.item.value.size, at: pulled.get(m.sk) ?? NaN });
    for (const c of found) {
      if (Number.isNaN(c.at)) {
        c.at = now;
        if (!dryRun) await deps.index.put(pulledKey(name, c.digest), { at: now });
      }
      out.push(c);
    }
  }
  return out;
}

async function evictItem(deps: RetentionDeps, c: CachedItem): Promise<void> {
  const digest = parseDigest(c.digest);
  try {
    if (c.kind === 'blob') await deps.blobs.delete(c.name, digest);
    else await deps.manifests.delete(c.name, { kind: 'digest', digest });
  } catch (err) {
    // Gone already: another pass, or a delete, came first.
    if (!(err instanceof OciError && (err.kind === 'BLOB_UNKNOWN' || err.kind === 'MANIFEST_UNKNOWN'))) throw err;
  }
  await deps.index.delete(pulledKey(c.name, c.digest));
}

function sum(sizes: Map<string, number>): number {
  let n = 0;
  for (const s of sizes.values()) n += s;
  return n;
}

import { systemClock, type Clock } from '../../ports/clock.js';
import {
  MAX_LIST_LIMIT,
  type Item,
  type ItemKey,
  type Json,
  type Lease,
  type LeaseResult,
  type ListOptions,
  type MetaIndex,
  type WriteOptions,
} from '../../ports/meta-index.js';

interface Stored {
  value: Json;
  version: number;
  expiresAt?: number;
}

/**
 * In-process MetaIndex for unit tests and single-process use. Every method runs without an
 * await between its read and its write, which makes it atomic on one event loop.
 */
export class MemoryMetaIndex implements MetaIndex {
  private readonly partitions = new Map<string, Map<string, Stored>>();

  constructor(private readonly clock: Clock = systemClock) {}

  async get<T extends Json>(key: ItemKey): Promise<Item<T> | undefined> {
    const s = this.live(key);
    return s ? (copy(s) as Item<T>) : undefined;
  }

  async putIfAbsent(key: ItemKey, value: Json, options: WriteOptions = {}): Promise<boolean> {
    if (this.live(key)) return false;
    this.write(key, value, options);
    return true;
  }

  async put(key: ItemKey, value: Json, options: WriteOptions = {}): Promise<number> {
    return this.write(key, value, options);
  }

  async compareAndSet(key: ItemKey, expectedVersion: number, value: Json, options: WriteOptions = {}) {
    const s = this.live(key);
    if (!s || s.version !== expectedVersion) return undefined;
    return this.write(key, value, options);
  }

  async delete(key: ItemKey, expectedVersion?: number): Promise<boolean> {
    const s = this.live(key);
    if (!s || (expectedVersion !== undefined && s.version !== expectedVersion)) return false;
    // Keep a tombstone so versions never repeat for a key.
    this.partition(key.pk).set(key.sk, { value: null, version: s.version, expiresAt: -1 });
    return true;
  }

  async add(key: ItemKey, delta: number): Promise<number> {
    const s = this.live(key);
    const current = s ? s.value : 0;
    if (typeof current !== 'number') throw new TypeError(`item ${key.pk}/${key.sk} is not a counter`);
    const next = current + delta;
    this.write(key, next, {});
    return next;
  }

  async list<T extends Json>(pk: string, options: ListOptions): Promise<Array<{ sk: string; item: Item<T> }>> {
    const limit = Math.min(Math.max(1, options.limit), MAX_LIST_LIMIT);
    const part = this.partitions.get(pk);
    if (!part) return [];
    const now = this.clock.now();
    return [...part.entries()]
      .filter(([sk, s]) => isLive(s, now) && (options.after === undefined || compareBytes(sk, options.after) > 0))
      .filter(([sk]) => options.prefix === undefined || sk.startsWith(options.prefix))
      .sort(([a], [b]) => compareBytes(a, b))
      .slice(0, limit)
      .map(([sk, s]) => ({ sk, item: copy(s) as Item<T> }));
  }

  async acquireLease(key: ItemKey, owner: string, ttlMs: number): Promise<LeaseResult> {
    const raw = this.partition(key.pk).get(key.sk);
    const now = this.clock.now();
    const held = raw && isLive(raw, now) ? leaseValue(key, raw) : undefined;
    if (held && held.owner !== owner) return { acquired: false, holder: held.owner, token: held.token, expiresAt: raw!.expiresAt! };
    const previousToken = raw && raw.value !== null && typeof raw.value === 'object' ? Number((raw.value as { token?: number }).token ?? 0) : 0;
    const token = held ? held.token : previousToken + 1;
    const expiresAt = now + ttlMs;
    this.write(key, { owner, token }, { expiresAt });
    return { acquired: true, lease: { key, owner, token, expiresAt } };
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<Lease | undefined> {
    const s = this.live(lease.key);
    const held = s?.value as { owner: string; token: number } | undefined;
    if (!held || held.owner !== lease.owner || held.token !== lease.token) return undefined;
    const expiresAt = this.clock.now() + ttlMs;
    this.write(lease.key, held, { expiresAt });
    return { ...lease, expiresAt };
  }

  async releaseLease(lease: Lease): Promise<boolean> {
    const s = this.live(lease.key);
    const held = s?.value as { owner: string; token: number } | undefined;
    if (!held || held.owner !== lease.owner || held.token !== lease.token) return false;
    // Expire rather than delete: the token must survive for the next holder.
    this.write(lease.key, held, { expiresAt: this.clock.now() });
    return true;
  }

  private partition(pk: string): Map<string, Stored> {
    let part = this.partitions.get(pk);
    if (!part) this.partitions.set(pk, (part = new Map()));
    return part;
  }

  private live(key: ItemKey): Stored | undefined {
    const s = this.partitions.get(key.pk)?.get(key.sk);
    return s && isLive(s, this.clock.now()) ? s : undefined;
  }

  private write(key: ItemKey, value: Json, options: WriteOptions): number {
    const part = this.partition(key.pk);
    const version = (part.get(key.sk)?.version ?? 0) + 1;
    const stored: Stored = { value: structuredClone(value), version };
    if (options.expiresAt !== undefined) stored.expiresAt = options.expiresAt;
    part.set(key.sk, stored);
    return version;
  }
}

function isLive(s: Stored, now: number): boolean {
  return s.expiresAt === undefined || s.expiresAt > now;
}

/** The holder of a live lease item; a live item of any other kind at a lease key is a failure. */
function leaseValue(key: ItemKey, s: Stored): { owner: string; token: number } {
  const v = s.value as { owner?: unknown; token?: unknown } | null;
  if (s.expiresAt === undefined || v === null || typeof v !== 'object' || typeof v.owner !== 'string' || typeof v.token !== 'number') {
    throw new TypeError(`item ${key.pk}/${key.sk} is not a lease`);
  }
  return { owner: v.owner, token: v.token };
}

function copy(s: Stored): Item {
  const item: Item = { value: structuredClone(s.value), version: s.version };
  if (s.expiresAt !== undefined) item.expiresAt = s.expiresAt;
  return item;
}

const encoder = new TextEncoder();

/** Orders sort keys by their UTF-8 bytes, as DynamoDB and SQLite's BINARY collation do. */
export function compareBytes(a: string, b: string): number {
  if (a === b) return 0;
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

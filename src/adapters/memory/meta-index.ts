import { systemClock, type Clock } from '../../ports/clock.js';
import {
  MAX_LIST_LIMIT,
  type Item,
  type ItemKey,
  type Json,
  type Lease,
  type LeaseResult,
  type LeaseView,
  type ListOptions,
  type MetaIndex,
  type WriteOptions,
} from '../../ports/meta-index.js';

interface Stored {
  /** The item's value; for a lease item, the state its holders wrote (`lease.state`) instead. */
  value: Json;
  version: number;
  expiresAt?: number;
  /** The last fencing token issued at this key: kept through every write, expiry and delete. */
  token?: number;
  /** Present on a lease item, live or not. */
  lease?: { owner: string; state?: Json };
}

/**
 * In-process MetaIndex for unit tests and single-process use. Every method runs without an
 * await between its read and its write, which makes it atomic on one event loop.
 */
export class MemoryMetaIndex implements MetaIndex {
  private readonly partitions = new Map<string, Map<string, Stored>>();

  constructor(private readonly clock: Clock = systemClock) {}

  async sweep(olderThanMs: number): Promise<number> {
    const cutoff = this.clock.now() - olderThanMs;
    let erased = 0;
    for (const [pk, items] of this.partitions) {
      for (const [sk, s] of items) {
        if (s.expiresAt !== undefined && s.expiresAt < cutoff) {
          items.delete(sk);
          erased++;
        }
      }
      if (items.size === 0) this.partitions.delete(pk);
    }
    return erased;
  }

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
    // Keep a tombstone, dated by its deletion, so versions never repeat for a key and fencing
    // tokens only grow, until `sweep` erases it a week later.
    const tombstone: Stored = { value: null, version: s.version, expiresAt: this.clock.now() };
    if (s.token !== undefined) tombstone.token = s.token;
    this.partition(key.pk).set(key.sk, tombstone);
    return true;
  }

  async add(key: ItemKey, delta: number): Promise<number> {
    const raw = this.partitions.get(key.pk)?.get(key.sk);
    const s = this.live(key);
    const current = s ? s.value : 0;
    if (raw?.lease || typeof current !== 'number') throw new TypeError(`item ${key.pk}/${key.sk} is not a counter`);
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
    const raw = this.partitions.get(key.pk)?.get(key.sk);
    const now = this.clock.now();
    const live = raw !== undefined && isLive(raw, now);
    if (live && !raw.lease) throw new TypeError(`item ${key.pk}/${key.sk} is not a lease`);
    const state = raw?.lease?.state;
    if (live && raw.lease!.owner !== owner) {
      return withState({ acquired: false, holder: raw.lease!.owner, token: raw.token!, expiresAt: raw.expiresAt! }, state);
    }
    const token = live ? raw.token! : Math.max((raw?.token ?? 0) + 1, now);
    const expiresAt = now + ttlMs;
    this.writeLease(key, { owner, token, expiresAt, state });
    return withState({ acquired: true, lease: { key, owner, token, expiresAt } }, state);
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<Lease | undefined> {
    const held = this.held(lease);
    if (!held) return undefined;
    const expiresAt = this.clock.now() + ttlMs;
    this.writeLease(lease.key, { ...lease, expiresAt, state: held.lease!.state });
    return { ...lease, expiresAt };
  }

  async updateLease(lease: Lease, state: Json, ttlMs: number): Promise<Lease | undefined> {
    if (!this.held(lease)) return undefined;
    const expiresAt = this.clock.now() + ttlMs;
    this.writeLease(lease.key, { ...lease, expiresAt, state });
    return { ...lease, expiresAt };
  }

  async releaseLease(lease: Lease, state?: Json): Promise<boolean> {
    const held = this.held(lease);
    if (!held) return false;
    // Expire rather than delete: the token and the state must survive for the next holder.
    this.writeLease(lease.key, { ...lease, expiresAt: this.clock.now(), state: state === undefined ? held.lease!.state : state });
    return true;
  }

  async readLease<S extends Json>(key: ItemKey): Promise<LeaseView<S> | undefined> {
    const raw = this.partitions.get(key.pk)?.get(key.sk);
    if (!raw) return undefined;
    const live = isLive(raw, this.clock.now());
    if (!raw.lease) {
      if (live) throw new TypeError(`item ${key.pk}/${key.sk} is not a lease`);
      // Deleted or overwritten and expired: only the token is left of a lease, if there ever was one.
      return raw.token === undefined ? undefined : { token: raw.token, expiresAt: raw.expiresAt! };
    }
    const view: LeaseView<S> = { token: raw.token!, expiresAt: raw.expiresAt! };
    if (live) view.holder = raw.lease.owner;
    if (raw.lease.state !== undefined) view.state = structuredClone(raw.lease.state) as S;
    return view;
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

  /** The live lease item, if `lease.owner` holds it with `lease.token`. */
  private held(lease: Lease): Stored | undefined {
    const s = this.live(lease.key);
    return s?.lease?.owner === lease.owner && s.token === lease.token ? s : undefined;
  }

  private write(key: ItemKey, value: Json, options: WriteOptions): number {
    const part = this.partition(key.pk);
    const previous = part.get(key.sk);
    const stored: Stored = { value: structuredClone(value), version: (previous?.version ?? 0) + 1 };
    if (options.expiresAt !== undefined) stored.expiresAt = options.expiresAt;
    if (previous?.token !== undefined) stored.token = previous.token;
    part.set(key.sk, stored);
    return stored.version;
  }

  private writeLease(key: ItemKey, l: { owner: string; token: number; expiresAt: number; state: Json | undefined }): void {
    const part = this.partition(key.pk);
    const version = (part.get(key.sk)?.version ?? 0) + 1;
    const lease: Stored['lease'] = { owner: l.owner };
    if (l.state !== undefined) lease.state = structuredClone(l.state);
    part.set(key.sk, { value: null, version, expiresAt: l.expiresAt, token: l.token, lease });
  }
}

function isLive(s: Stored, now: number): boolean {
  return s.expiresAt === undefined || s.expiresAt > now;
}

/** A lease result with the lease's state, when there is one. */
function withState<R extends LeaseResult>(result: R, state: Json | undefined): R {
  return state === undefined ? result : { ...result, state: structuredClone(state) };
}

/** What get and list show of an item; a lease item reads as its holder, token and state. */
function copy(s: Stored): Item {
  const value: Json = s.lease
    ? { owner: s.lease.owner, token: s.token!, ...(s.lease.state === undefined ? {} : { state: s.lease.state }) }
    : s.value;
  const item: Item = { value: structuredClone(value), version: s.version };
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

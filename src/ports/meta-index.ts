/**
 * MetaIndex: the metadata index that many stateless Outpost instances share and that is
 * their only means of coordination. Items live in partitions (`pk`) and are ordered within
 * one by sort key (`sk`, compared as UTF-8 bytes), which maps directly onto a DynamoDB table
 * with a hash and a range key, and onto an SQLite table with a composite primary key.
 *
 * Every method touches exactly one item, so an adapter can implement each with a single
 * conditional write: no multi-item transactions are required or assumed. Atomicity and
 * idempotency are stated per method; callers compose multi-item protocols from these and
 * write the protocol down where they do (core/registry/*.ts).
 *
 * Expiry: an item written with `expiresAt` (epoch ms by the adapter's Clock) is treated as
 * absent by every method once that time has passed, whether or not the store has removed it
 * yet. Nothing relies on a store's own TTL deletion.
 */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface ItemKey {
  pk: string;
  sk: string;
}

export interface Item<T extends Json = Json> {
  value: T;
  /** Starts at 1 on creation, +1 on every write; never reused for a key, even after expiry. */
  version: number;
  expiresAt?: number;
}

export interface WriteOptions {
  /** Epoch ms after which the item counts as absent. */
  expiresAt?: number;
}

export interface ListOptions {
  /** Only items whose sk is strictly greater than this. */
  after?: string;
  /** Only items whose sk starts with this. */
  prefix?: string;
  /** At most this many items (1..1000). */
  limit: number;
}

export interface Lease {
  key: ItemKey;
  owner: string;
  /**
   * Fencing token: strictly greater than every token ever issued for this key, whatever was
   * deleted, released, expired or swept by a store's TTL housekeeping in between (see "Tokens"
   * on acquireLease). A writer that lost its lease can therefore always be told apart from the
   * current one.
   */
  token: number;
  expiresAt: number;
}

/**
 * What a lease item shows to anyone who reads it: the last token issued, the holder while the
 * lease is live, and the work's state as last written by a holder (kept through release and
 * expiry, so a successor can resume the work).
 */
export interface LeaseView<S extends Json = Json> {
  token: number;
  /** The live holder; undefined when the lease is free (released or expired). */
  holder?: string;
  /** Epoch ms by the adapter's Clock; in the past when the lease is free. */
  expiresAt: number;
  /** The state the last holder wrote with updateLease or releaseLease; undefined if none ever did. */
  state?: S;
}

/**
 * What acquireLease found. Acquired: the new lease and the state the previous holders left
 * (`state`, undefined if none), to resume from. Refused: who holds the lease (`holder`, its
 * `token`), until when (`expiresAt`, epoch ms by the adapter's Clock, always in the future when
 * reported) and the holder's latest state, so a waiter can follow its progress.
 */
export type LeaseResult =
  | { acquired: true; lease: Lease; state?: Json }
  | { acquired: false; holder: string; token: number; expiresAt: number; state?: Json };

export interface MetaIndex {
  /** Reads one item; undefined when absent or expired. Strongly consistent. */
  get<T extends Json = Json>(key: ItemKey): Promise<Item<T> | undefined>;

  /**
   * Creates the item only if no live item has the key.
   * Atomic (conditional put). Returns true when this call created it, false when a live item
   * was already there (which is left untouched). Safe to retry: a retry after a lost reply
   * returns false and changes nothing.
   */
  putIfAbsent(key: ItemKey, value: Json, options?: WriteOptions): Promise<boolean>;

  /**
   * Writes the item whatever is there (last writer wins). Atomic for the single item;
   * idempotent in effect when retried with the same value. Returns the new version.
   */
  put(key: ItemKey, value: Json, options?: WriteOptions): Promise<number>;

  /**
   * Replaces the item only if its current version is `expectedVersion` and it is live.
   * Atomic compare-and-set. Returns the new version, or undefined when the item changed,
   * expired or vanished (nothing is written then). Not blindly retryable: on a lost reply,
   * re-read and compare the value.
   */
  compareAndSet(key: ItemKey, expectedVersion: number, value: Json, options?: WriteOptions): Promise<number | undefined>;

  /**
   * Removes the item; with `expectedVersion`, only if that is its current version.
   * Atomic. Returns true when a live item was removed. Idempotent: removing an absent item
   * returns false and succeeds.
   */
  delete(key: ItemKey, expectedVersion?: number): Promise<boolean>;

  /**
   * Adds `delta` (may be negative) to the number stored at the key, creating it at 0 first.
   * Atomic counter add: concurrent adds never lose an update. Not idempotent: a retry after a
   * lost reply adds twice. Returns the value after the add. Fails with a TypeError, changing
   * nothing, when the item is not a number (a lease item included, live or not).
   */
  add(key: ItemKey, delta: number): Promise<number>;

  /**
   * Live items of partition `pk` in ascending sk order, starting after `options.after`.
   * Each item is read consistently; the page as a whole is not a snapshot.
   */
  list<T extends Json = Json>(pk: string, options: ListOptions): Promise<Array<{ sk: string; item: Item<T> }>>;

  /**
   * Takes the lease at `key` for `owner` for `ttlMs`, if it is free (absent, expired or
   * released) or already held by `owner` (then it is extended and keeps its token).
   * Atomic: the lease is taken or extended by one conditional write. Refused while someone
   * else holds it; the result then names that holder with its token, expiry and state, read in
   * the same atomic step as the refusal (or by a consistent read right after it). A free lease
   * is never reported as held: a refusal's `expiresAt` is later than the adapter's clock when it
   * returns. The holder may renew, so a waiter retries at `expiresAt` rather than assuming the
   * lease is free by then. Idempotent per owner: a retry by the same owner returns the same
   * token. Fails when the live item at `key` is not a lease, or (DynamoDB) when the lease kept
   * changing hands through every attempt to read a live holder. The state is kept: a new holder
   * receives it in the result, and it stays in the item until the holder overwrites it.
   *
   * Tokens. A new holder's token is max(previous token + 1, clock.now()). The previous token is
   * kept in the item through release, expiry and `delete` (a tombstone keeps it), so tokens grow
   * by at least one per acquisition; when a store's housekeeping has erased the item altogether
   * (DynamoDB's TTL sweep, no sooner than a week after it expired), the clock term still makes
   * the new token larger than any token issued before, since no token runs ahead of the clock by
   * more than one per acquisition.
   *
   * Fencing. The lease item carries the work's state, so "am I still the holder?" and "write my
   * progress" are one conditional write (updateLease): a holder that lost the lease (paused past
   * expiry, taken over) can never overwrite its successor's state.
   *
   *   r = acquireLease(fill#d, me, ttl)
   *   if !r.acquired: follow r.state until r.expiresAt (readLease), then try again
   *   resume from r.state (what the previous holders left)
   *   for each step of the work:
   *     do the step (write content under keys that carry r.lease.token)
   *     lease = updateLease(lease, { ...progress }, ttl)   // undefined: lost it, stop at once
   *   releaseLease(lease, { done: true, ... })
   *
   * Readers trust a state only as the holder's claim of what it has written; objects written by
   * content address (a blob whose digest the store verifies) need no fencing.
   */
  acquireLease(key: ItemKey, owner: string, ttlMs: number): Promise<LeaseResult>;

  /**
   * Extends a lease still held by `lease.owner` with `lease.token`. Atomic. Returns the
   * extended lease, or undefined when it has expired or been taken over (stop working then).
   * Idempotent.
   */
  renewLease(lease: Lease, ttlMs: number): Promise<Lease | undefined>;

  /**
   * Writes the work's `state` into the lease item and extends the lease by `ttlMs`, only while
   * `lease.owner` holds it live with `lease.token`. Atomic: one conditional write checks the
   * holder, token and expiry and writes the state. Returns the extended lease, or undefined
   * (nothing written) when the lease expired or was taken over. Idempotent: a retry after a
   * lost reply writes the same state again.
   */
  updateLease(lease: Lease, state: Json, ttlMs: number): Promise<Lease | undefined>;

  /**
   * Gives up a lease held with `lease.token` so that the next acquirer need not wait for
   * expiry; with `state`, writes it in the same conditional write. Atomic. Returns false (and
   * writes nothing) when it had already been lost. Idempotent. The fencing token and the state
   * survive the release.
   */
  releaseLease(lease: Lease, state?: Json): Promise<boolean>;

  /**
   * The lease item as it stands (token, live holder, state), or undefined when no lease was
   * ever taken at `key` (or housekeeping erased it). One strongly consistent read. Fails when
   * the item at `key` is not a lease.
   */
  readLease<S extends Json = Json>(key: ItemKey): Promise<LeaseView<S> | undefined>;

  /**
   * Housekeeping, an optional ability of stores without TTL deletion of their own: erases every
   * item (lease items and tombstones included) that expired or was deleted more than
   * `olderThanMs` ago, as DynamoDB's TTL sweep does a week after (adapters/dynamodb/schema.md).
   * Every promise above holds through it when `olderThanMs` is at least EXPIRED_ITEM_RETENTION_MS:
   * an erased item reads as absent; a version restarts only at a key no caller can still hold a
   * version of; a token issued after its lease item was erased is the clock, larger than any
   * issued before. Returns how many items it erased.
   */
  sweep?(olderThanMs: number): Promise<number>;
}

/**
 * How long an expired or deleted item is kept before housekeeping may erase it: DynamoDB's
 * `ttl` is set this far past expiry, and the other adapters' `sweep` is called with it.
 */
export const EXPIRED_ITEM_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

/** The largest page `list` must serve; callers page through longer partitions. */
export const MAX_LIST_LIMIT = 1000;

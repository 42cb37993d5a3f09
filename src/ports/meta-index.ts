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
   * Fencing token: strictly increases with every acquisition of the key by a new holder, so
   * a writer that lost its lease (paused past expiry) can be told apart from the current one.
   * See "Fencing" on acquireLease for how to use it when every write touches one item.
   */
  token: number;
  expiresAt: number;
}

/**
 * What acquireLease found. Refused: who holds the lease (`holder`, its `token`) and until when
 * (`expiresAt`, epoch ms by the adapter's Clock, always in the future when reported), so a
 * waiter knows whom it waits for and when to try again.
 */
export type LeaseResult =
  | { acquired: true; lease: Lease }
  | { acquired: false; holder: string; token: number; expiresAt: number };

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
   * lost reply adds twice. Returns the value after the add. Fails when the item is not a number.
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
   * else holds it; the result then names that holder with its token and expiry, read in the
   * same atomic step as the refusal (or by a consistent read right after it). A free lease is
   * never reported as held: a refusal's `expiresAt` is later than the adapter's clock when it
   * returns. The holder may renew, so a waiter retries at `expiresAt` rather than assuming the
   * lease is free by then. Idempotent per owner: a retry by the same owner returns the same
   * token. Fails when the live item at `key` is not a lease, or (DynamoDB) when the lease kept
   * changing hands through every attempt to read a live holder.
   *
   * Fencing. No method writes two items at once, so "check my token, then write" is safe only
   * when the check and the write are one compare-and-set on the item being written. The holder
   * therefore keeps the work's state (a fill's progress and result) in its own item beside the
   * lease (same partition, another sort key) and stamps every write of it with its token:
   *
   *   r = acquireLease(lease#d, me, ttl)
   *   if !r.acquired: wait for r.holder's work (read its state item) until r.expiresAt, retry
   *   for each step of the work:
   *     cur = get(state#d)
   *     if cur && cur.value.token > r.lease.token: stop      // a newer holder took over
   *     cur ? compareAndSet(state#d, cur.version, { token, ...progress })
   *         : putIfAbsent(state#d, { token, ...progress })  // refused: re-read, check again
   *     renewLease(r.lease, ttl) or stop when it is undefined
   *   releaseLease(r.lease)
   *
   * The compare-and-set makes the token check and the write one atomic step, so a holder that
   * lost the lease can never overwrite a newer holder's state; readers trust a state item only
   * while its token is the current lease's (or the work is marked done) and otherwise treat it
   * as a dead holder's, to resume or discard. Items written by content address (a blob whose
   * digest the store verifies) need no fencing: a stale holder can only write the same bytes.
   */
  acquireLease(key: ItemKey, owner: string, ttlMs: number): Promise<LeaseResult>;

  /**
   * Extends a lease still held by `lease.owner` with `lease.token`. Atomic. Returns the
   * extended lease, or undefined when it has expired or been taken over (stop working then).
   * Idempotent.
   */
  renewLease(lease: Lease, ttlMs: number): Promise<Lease | undefined>;

  /**
   * Gives up a lease held with `lease.token` so that the next acquirer need not wait for
   * expiry. Atomic. Returns false when it had already been lost. Idempotent. The fencing
   * token survives the release, so the next holder still gets a larger one.
   */
  releaseLease(lease: Lease): Promise<boolean>;
}

/** The largest page `list` must serve; callers page through longer partitions. */
export const MAX_LIST_LIMIT = 1000;

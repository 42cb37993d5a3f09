import Database from 'better-sqlite3';
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

/**
 * How long a statement waits for another process's write lock before failing. better-sqlite3
 * waits synchronously, blocking this process's event loop, so it is kept short: every write
 * transaction here is a handful of statements and holds the lock for microseconds.
 */
const BUSY_TIMEOUT_MS = 5_000;

/**
 * MetaIndex on an embedded SQLite database (better-sqlite3), safe for several Outpost
 * processes sharing one file: WAL journal, a busy timeout instead of SQLITE_BUSY errors, and
 * every read-then-write inside a `BEGIN IMMEDIATE` transaction, which takes the database's
 * write lock before reading. Single conditional writes are single statements.
 *
 * Schema (one table, the same shape as the DynamoDB table):
 *   items(pk TEXT, sk TEXT, value TEXT /* JSON *\/, version INTEGER, expires_at INTEGER NULL,
 *         owner TEXT NULL, token INTEGER NULL)
 *   PRIMARY KEY (pk, sk), BINARY collation so sk orders by UTF-8 bytes.
 * Deleted items stay as tombstones (value NULL, expires_at = the time of deletion, so never live)
 * so versions never repeat, until `sweep` erases them with expired items a week later.
 * A lease item has an `owner` (its holder, live or not) and keeps its state in `value` (NULL
 * when none was written). `token` is the last fencing token issued at the key; no write other
 * than a lease's clears it, so tokens only grow, through delete and overwrite too.
 */
export class SqliteMetaIndex implements MetaIndex {
  private readonly db: Database.Database;
  private readonly stmt;

  constructor(file: string, private readonly clock: Clock = systemClock) {
    this.db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS items (
      pk TEXT NOT NULL,
      sk TEXT NOT NULL,
      value TEXT,
      version INTEGER NOT NULL,
      expires_at INTEGER,
      owner TEXT,
      token INTEGER,
      PRIMARY KEY (pk, sk)
    ) WITHOUT ROWID`);
    this.addLeaseColumns();
    const live = '(expires_at IS NULL OR expires_at > @now)';
    const held = `pk = @pk AND sk = @sk AND owner = @owner AND token = @token AND expires_at > @now`;
    const columns = 'value, version, expires_at, owner, token';
    this.stmt = {
      get: this.db.prepare(`SELECT ${columns} FROM items WHERE pk = @pk AND sk = @sk`),
      getLive: this.db.prepare(`SELECT ${columns} FROM items WHERE pk = @pk AND sk = @sk AND ${live}`),
      // Inserts, or revives an expired/deleted item with the next version: one statement, atomic.
      putIfAbsent: this.db.prepare(`INSERT INTO items (pk, sk, value, version, expires_at) VALUES (@pk, @sk, @value, 1, @expiresAt)
        ON CONFLICT (pk, sk) DO UPDATE SET value = excluded.value, version = items.version + 1, expires_at = excluded.expires_at, owner = NULL
        WHERE NOT (items.expires_at IS NULL OR items.expires_at > @now)`),
      put: this.db.prepare(`INSERT INTO items (pk, sk, value, version, expires_at) VALUES (@pk, @sk, @value, 1, @expiresAt)
        ON CONFLICT (pk, sk) DO UPDATE SET value = excluded.value, version = items.version + 1, expires_at = excluded.expires_at, owner = NULL
        RETURNING version`),
      cas: this.db.prepare(`UPDATE items SET value = @value, version = version + 1, expires_at = @expiresAt, owner = NULL
        WHERE pk = @pk AND sk = @sk AND version = @expected AND ${live} RETURNING version`),
      delete: this.db.prepare(`UPDATE items SET value = NULL, expires_at = @now, owner = NULL
        WHERE pk = @pk AND sk = @sk AND ${live} AND (@expected IS NULL OR version = @expected)`),
      // Tombstones from before deletions were dated (expires_at -1) are erased by the first sweep.
      sweep: this.db.prepare(`DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at < @cutoff`),
      list: this.db.prepare(`SELECT sk, ${columns} FROM items
        WHERE pk = @pk AND ${live} AND (@after IS NULL OR sk > @after)
          AND (@prefix IS NULL OR (sk >= @prefix AND substr(sk, 1, length(@prefix)) = @prefix))
        ORDER BY sk LIMIT @limit`),
      takeLease: this.db.prepare(`INSERT INTO items (pk, sk, value, version, expires_at, owner, token)
        VALUES (@pk, @sk, @state, 1, @expiresAt, @owner, @token)
        ON CONFLICT (pk, sk) DO UPDATE SET value = excluded.value, version = items.version + 1,
          expires_at = excluded.expires_at, owner = excluded.owner, token = excluded.token`),
      // The conditional writes of a holder: each one statement that checks owner, token and expiry.
      renewLease: this.db.prepare(`UPDATE items SET version = version + 1, expires_at = @expiresAt WHERE ${held}`),
      updateLease: this.db.prepare(`UPDATE items SET value = @state, version = version + 1, expires_at = @expiresAt WHERE ${held}`),
      releaseLease: this.db.prepare(`UPDATE items SET value = coalesce(@state, value), version = version + 1, expires_at = @now
        WHERE ${held}`),
    };
  }

  async get<T extends Json>(key: ItemKey): Promise<Item<T> | undefined> {
    const row = this.stmt.getLive.get({ ...key, now: this.clock.now() }) as Row | undefined;
    return row ? toItem<T>(row) : undefined;
  }

  async putIfAbsent(key: ItemKey, value: Json, options: WriteOptions = {}): Promise<boolean> {
    const info = this.stmt.putIfAbsent.run({ ...key, value: JSON.stringify(value), expiresAt: options.expiresAt ?? null, now: this.clock.now() });
    return info.changes === 1;
  }

  async put(key: ItemKey, value: Json, options: WriteOptions = {}): Promise<number> {
    const row = this.stmt.put.get({ ...key, value: JSON.stringify(value), expiresAt: options.expiresAt ?? null }) as { version: number };
    return row.version;
  }

  async compareAndSet(key: ItemKey, expectedVersion: number, value: Json, options: WriteOptions = {}) {
    const row = this.stmt.cas.get({
      ...key,
      value: JSON.stringify(value),
      expected: expectedVersion,
      expiresAt: options.expiresAt ?? null,
      now: this.clock.now(),
    }) as { version: number } | undefined;
    return row?.version;
  }

  async delete(key: ItemKey, expectedVersion?: number): Promise<boolean> {
    return this.stmt.delete.run({ ...key, expected: expectedVersion ?? null, now: this.clock.now() }).changes === 1;
  }

  async add(key: ItemKey, delta: number): Promise<number> {
    return this.immediate(() => {
      const now = this.clock.now();
      const row = this.stmt.get.get(key) as Row | undefined;
      const current = row && isLive(row, now) ? (JSON.parse(row.value!) as Json) : 0;
      if (row?.owner != null || typeof current !== 'number') throw new TypeError(`item ${key.pk}/${key.sk} is not a counter`);
      const next = current + delta;
      this.stmt.put.get({ ...key, value: JSON.stringify(next), expiresAt: null });
      return next;
    });
  }

  async list<T extends Json>(pk: string, options: ListOptions): Promise<Array<{ sk: string; item: Item<T> }>> {
    const rows = this.stmt.list.all({
      pk,
      after: options.after ?? null,
      prefix: options.prefix ?? null,
      limit: Math.min(Math.max(1, options.limit), MAX_LIST_LIMIT),
      now: this.clock.now(),
    }) as Array<Row & { sk: string }>;
    return rows.map((row) => ({ sk: row.sk, item: toItem<T>(row) }));
  }

  async acquireLease(key: ItemKey, owner: string, ttlMs: number): Promise<LeaseResult> {
    return this.immediate((): LeaseResult => {
      const now = this.clock.now();
      const row = this.stmt.get.get(key) as Row | undefined;
      const live = row !== undefined && isLive(row, now);
      if (live && row.owner === null) throw new TypeError(`item ${key.pk}/${key.sk} is not a lease`);
      // The state the holders left stays in the item; a plain value does not become one.
      const state = row?.owner != null ? row.value : null;
      if (live && row.owner !== owner) {
        return withState({ acquired: false, holder: row.owner!, token: row.token!, expiresAt: row.expires_at! }, state);
      }
      const token = live ? row.token! : Math.max((row?.token ?? 0) + 1, now);
      const expiresAt = now + ttlMs;
      this.stmt.takeLease.run({ ...key, state, expiresAt, owner, token });
      return withState({ acquired: true, lease: { key, owner, token, expiresAt } }, state);
    });
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<Lease | undefined> {
    const expiresAt = this.clock.now() + ttlMs;
    const info = this.stmt.renewLease.run({ ...this.holder(lease), expiresAt });
    return info.changes === 1 ? { ...lease, expiresAt } : undefined;
  }

  async updateLease(lease: Lease, state: Json, ttlMs: number): Promise<Lease | undefined> {
    const expiresAt = this.clock.now() + ttlMs;
    const info = this.stmt.updateLease.run({ ...this.holder(lease), state: JSON.stringify(state), expiresAt });
    return info.changes === 1 ? { ...lease, expiresAt } : undefined;
  }

  async releaseLease(lease: Lease, state?: Json): Promise<boolean> {
    // Expire rather than delete: the token and the state must survive for the next holder.
    const info = this.stmt.releaseLease.run({ ...this.holder(lease), state: state === undefined ? null : JSON.stringify(state) });
    return info.changes === 1;
  }

  async readLease<S extends Json>(key: ItemKey): Promise<LeaseView<S> | undefined> {
    const row = this.stmt.get.get(key) as Row | undefined;
    if (!row) return undefined;
    const live = isLive(row, this.clock.now());
    if (row.owner === null) {
      if (live) throw new TypeError(`item ${key.pk}/${key.sk} is not a lease`);
      // Deleted or overwritten and expired: only the token is left of a lease, if there ever was one.
      return row.token === null ? undefined : { token: row.token, expiresAt: row.expires_at! };
    }
    const view: LeaseView<S> = { token: row.token!, expiresAt: row.expires_at! };
    if (live) view.holder = row.owner;
    if (row.value !== null) view.state = JSON.parse(row.value) as S;
    return view;
  }

  async sweep(olderThanMs: number): Promise<number> {
    return this.stmt.sweep.run({ cutoff: this.clock.now() - olderThanMs }).changes;
  }

  close(): void {
    this.db.close();
  }

  /** The parameters of the holder condition (`held`) for `lease`, at this instant. */
  private holder(lease: Lease) {
    return { ...lease.key, owner: lease.owner, token: lease.token, now: this.clock.now() };
  }

  /** Files created before leases had columns of their own get them (no lease was stored before). */
  private addLeaseColumns(): void {
    this.immediate(() => {
      const columns = (this.db.pragma('table_info(items)') as Array<{ name: string }>).map((c) => c.name);
      if (!columns.includes('owner')) this.db.exec('ALTER TABLE items ADD COLUMN owner TEXT');
      if (!columns.includes('token')) this.db.exec('ALTER TABLE items ADD COLUMN token INTEGER');
    });
  }

  private immediate<R>(fn: () => R): R {
    return this.db.transaction(fn).immediate();
  }
}

interface Row {
  value: string | null;
  version: number;
  expires_at: number | null;
  owner: string | null;
  token: number | null;
}

function isLive(row: Row, now: number): boolean {
  return row.expires_at === null || row.expires_at > now;
}

/** A lease result with the lease's state (stored JSON), when there is one. */
function withState<R extends LeaseResult>(result: R, state: string | null): R {
  return state === null ? result : { ...result, state: JSON.parse(state) as Json };
}

/** What get and list show of a row; a lease item reads as its holder, token and state. */
function toItem<T extends Json>(row: Row): Item<T> {
  const value: Json =
    row.owner !== null
      ? { owner: row.owner, token: row.token!, ...(row.value === null ? {} : { state: JSON.parse(row.value) as Json }) }
      : (JSON.parse(row.value!) as Json);
  const item: Item<T> = { value: value as T, version: row.version };
  if (row.expires_at !== null) item.expiresAt = row.expires_at;
  return item;
}

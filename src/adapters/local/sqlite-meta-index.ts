import Database from 'better-sqlite3';
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
 *   items(pk TEXT, sk TEXT, value TEXT /* JSON *\/, version INTEGER, expires_at INTEGER NULL)
 *   PRIMARY KEY (pk, sk), BINARY collation so sk orders by UTF-8 bytes.
 * Deleted items stay as tombstones (value NULL, expires_at -1) so versions never repeat.
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
      PRIMARY KEY (pk, sk)
    ) WITHOUT ROWID`);
    const live = '(expires_at IS NULL OR expires_at > @now)';
    this.stmt = {
      get: this.db.prepare(`SELECT value, version, expires_at FROM items WHERE pk = @pk AND sk = @sk`),
      getLive: this.db.prepare(`SELECT value, version, expires_at FROM items WHERE pk = @pk AND sk = @sk AND ${live}`),
      // Inserts, or revives an expired/deleted item with the next version: one statement, atomic.
      putIfAbsent: this.db.prepare(`INSERT INTO items (pk, sk, value, version, expires_at) VALUES (@pk, @sk, @value, 1, @expiresAt)
        ON CONFLICT (pk, sk) DO UPDATE SET value = excluded.value, version = items.version + 1, expires_at = excluded.expires_at
        WHERE NOT (items.expires_at IS NULL OR items.expires_at > @now)`),
      put: this.db.prepare(`INSERT INTO items (pk, sk, value, version, expires_at) VALUES (@pk, @sk, @value, 1, @expiresAt)
        ON CONFLICT (pk, sk) DO UPDATE SET value = excluded.value, version = items.version + 1, expires_at = excluded.expires_at
        RETURNING version`),
      cas: this.db.prepare(`UPDATE items SET value = @value, version = version + 1, expires_at = @expiresAt
        WHERE pk = @pk AND sk = @sk AND version = @expected AND ${live} RETURNING version`),
      delete: this.db.prepare(`UPDATE items SET value = NULL, expires_at = -1
        WHERE pk = @pk AND sk = @sk AND ${live} AND (@expected IS NULL OR version = @expected)`),
      list: this.db.prepare(`SELECT sk, value, version, expires_at FROM items
        WHERE pk = @pk AND ${live} AND (@after IS NULL OR sk > @after)
          AND (@prefix IS NULL OR (sk >= @prefix AND substr(sk, 1, length(@prefix)) = @prefix))
        ORDER BY sk LIMIT @limit`),
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
      const row = this.stmt.getLive.get({ ...key, now }) as Row | undefined;
      const current = row ? (JSON.parse(row.value!) as Json) : 0;
      if (typeof current !== 'number') throw new TypeError(`item ${key.pk}/${key.sk} is not a counter`);
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
      const value = row?.value ? (JSON.parse(row.value) as { owner?: unknown; token?: unknown }) : undefined;
      const live = row !== undefined && (row.expires_at === null || row.expires_at > now);
      if (live && (row.expires_at === null || typeof value?.owner !== 'string' || typeof value.token !== 'number')) {
        throw new TypeError(`item ${key.pk}/${key.sk} is not a lease`);
      }
      if (live && value!.owner !== owner) {
        return { acquired: false, holder: value!.owner as string, token: value!.token as number, expiresAt: row.expires_at! };
      }
      const token = live ? (value!.token as number) : Number(value?.token ?? 0) + 1;
      const expiresAt = now + ttlMs;
      this.stmt.put.get({ ...key, value: JSON.stringify({ owner, token }), expiresAt });
      return { acquired: true, lease: { key, owner, token, expiresAt } };
    });
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<Lease | undefined> {
    return this.immediate(() => {
      if (!this.holds(lease)) return undefined;
      const expiresAt = this.clock.now() + ttlMs;
      this.stmt.put.get({ ...lease.key, value: JSON.stringify({ owner: lease.owner, token: lease.token }), expiresAt });
      return { ...lease, expiresAt };
    });
  }

  async releaseLease(lease: Lease): Promise<boolean> {
    return this.immediate(() => {
      if (!this.holds(lease)) return false;
      const value = JSON.stringify({ owner: lease.owner, token: lease.token });
      this.stmt.put.get({ ...lease.key, value, expiresAt: this.clock.now() });
      return true;
    });
  }

  close(): void {
    this.db.close();
  }

  private holds(lease: Lease): boolean {
    const row = this.stmt.getLive.get({ ...lease.key, now: this.clock.now() }) as Row | undefined;
    const value = row?.value ? (JSON.parse(row.value) as { owner?: string; token?: number }) : undefined;
    return value?.owner === lease.owner && value.token === lease.token;
  }

  private immediate<R>(fn: () => R): R {
    return this.db.transaction(fn).immediate();
  }
}

interface Row {
  value: string | null;
  version: number;
  expires_at: number | null;
}

function toItem<T extends Json>(row: Row): Item<T> {
  const item: Item<T> = { value: JSON.parse(row.value!) as T, version: row.version };
  if (row.expires_at !== null) item.expiresAt = row.expires_at;
  return item;
}

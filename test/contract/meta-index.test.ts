import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteMetaIndex } from '../../src/adapters/local/sqlite-meta-index.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { TestClock } from '../support/clock.js';
import type { RaceReport } from '../support/meta-index-race-worker.js';
import { metaIndexContract } from './meta-index.contract.js';

metaIndexContract('MemoryMetaIndex', (clock) => ({ index: new MemoryMetaIndex(clock) }));

metaIndexContract('SqliteMetaIndex (two connections to one file)', (clock) => {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-meta-'));
  const file = join(dir, 'index.db');
  const index = new SqliteMetaIndex(file, clock);
  const other = new SqliteMetaIndex(file, clock);
  return {
    index,
    other,
    cleanup: () => {
      index.close();
      other.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('SqliteMetaIndex on a file from before leases had columns of their own', () => {
  it('adds them on open and keeps the items', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-meta-old-'));
    try {
      const file = join(dir, 'index.db');
      const old = new Database(file);
      old.exec(`CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, value TEXT, version INTEGER NOT NULL, expires_at INTEGER,
        PRIMARY KEY (pk, sk)) WITHOUT ROWID`);
      old.prepare(`INSERT INTO items VALUES ('p', 'k', '"kept"', 3, NULL)`).run();
      old.close();
      const clock = new TestClock();
      const index = new SqliteMetaIndex(file, clock);
      expect(await index.get({ pk: 'p', sk: 'k' })).toEqual({ value: 'kept', version: 3 });
      const lease = await index.acquireLease({ pk: 'l', sk: 'k' }, 'A', 1_000);
      expect(lease).toMatchObject({ acquired: true, lease: { token: clock.now() } });
      index.close();
      new SqliteMetaIndex(file, clock).close(); // opening again finds the columns there
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * better-sqlite3 is synchronous, so the Promise.all races above never truly overlap inside one
 * process. Here separate Node processes, each with its own connection, hammer the same file at
 * the same moment: only SQLite's locking keeps the conditional writes atomic.
 */
describe('SqliteMetaIndex across processes', () => {
  const WORKERS = 3;
  const ROUNDS = 150;
  const root = fileURLToPath(new URL('../../', import.meta.url));
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'outpost-meta-mp-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps putIfAbsent, compareAndSet, acquireLease and add atomic between processes', async () => {
    const file = join(dir, 'index.db');
    const index = new SqliteMetaIndex(file);
    for (let r = 0; r < ROUNDS; r++) await index.put({ pk: 'race', sk: `cas-${r}` }, 'start');

    const started = Date.now();
    const workers = Array.from({ length: WORKERS }, (_, i) => startWorker(root, file, `w${i}`, WORKERS, ROUNDS));
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.go();
    const reports = await Promise.all(workers.map((w) => w.done));

    for (let r = 0; r < ROUNDS; r++) {
      const creators = reports.filter((rep) => rep.created.includes(r)).map((rep) => rep.id);
      const swappers = reports.filter((rep) => rep.swapped.includes(r)).map((rep) => rep.id);
      const holders = reports.flatMap((rep) => rep.leases.filter((l) => l.round === r).map((l) => ({ id: rep.id, token: l.token })));
      expect(creators, `round ${r} putIfAbsent`).toHaveLength(1);
      expect(swappers, `round ${r} compareAndSet`).toHaveLength(1);
      expect(holders, `round ${r} acquireLease`).toHaveLength(1);
      expect((await index.get({ pk: 'race', sk: `create-${r}` }))?.value).toBe(creators[0]);
      expect(await index.get({ pk: 'race', sk: `cas-${r}` })).toEqual({ value: swappers[0], version: 2 });
      // The first lease at a key: its token is the clock of the process that took it.
      expect(holders[0]!.token).toBeGreaterThanOrEqual(started);
      const refusals = reports.flatMap((rep) => rep.refusals.filter((x) => x.round === r));
      expect(refusals, `round ${r} refusals name the holder`).toEqual(
        Array.from({ length: WORKERS - 1 }, () => ({ round: r, holder: holders[0]!.id, token: holders[0]!.token })),
      );
    }
    const totals = reports.flatMap((rep) => rep.totals).sort((a, b) => a - b);
    expect(totals).toEqual(Array.from({ length: WORKERS * ROUNDS }, (_, i) => i + 1));
    expect((await index.get({ pk: 'race', sk: 'counter' }))?.value).toBe(WORKERS * ROUNDS);
    index.close();
  });
});

interface Worker {
  ready: Promise<void>;
  go: () => void;
  done: Promise<RaceReport>;
}

/** Starts one race worker (a plain Node process running the TypeScript adapter). */
function startWorker(root: string, file: string, id: string, workers: number, rounds: number): Worker {
  const child = spawn(
    process.execPath,
    ['--import', './test/support/register-ts.mjs', './test/support/meta-index-race-worker.ts', file, id, String(workers), String(rounds)],
    { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  // The worker gives up by itself after 15 s; this is the backstop for one that hangs anyway.
  const backstop = setTimeout(() => child.kill('SIGKILL'), 18_000).unref();
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(backstop);
      resolve(code);
    });
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: string) => {
      stdout += d;
      if (stdout.startsWith('ready\n')) resolve();
    });
    exited.then((code) => reject(new Error(`worker ${id} exited (${code}) before it was ready: ${stderr}`)), reject);
  });
  const done = exited.then((code) => {
    if (code !== 0) throw new Error(`worker ${id} exited with ${code}: ${stderr}`);
    return JSON.parse(stdout.slice('ready\n'.length)) as RaceReport;
  });
  return { ready, go: () => child.stdin.end('go\n'), done };
}

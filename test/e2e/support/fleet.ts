import { startOutpost, type OutpostProcess } from './server.js';

/**
 * Several Outpost processes on one data directory, any of which may be killed (SIGKILL, no
 * drain) and started again on a new port while clients go on: `send` picks a live instance for
 * each attempt and retries another one when the connection fails or a response is cut, so a
 * request that reached a dying instance is told apart from one the registry answered.
 *
 * What a caller learns from `send` beside the answer: how many attempts were cut (the request
 * may have been applied by the instance that died, fully or in part), and how many 503s with
 * Retry-After it waited through (the registry refused and wrote nothing).
 */

export interface Answer {
  status: number;
  headers: Headers;
  bytes: Buffer;
  /** Attempts that ended without an answer (connection refused or reset, body cut). */
  interrupted: number;
  /** 503 answers waited through before this one. */
  unavailable: number;
}

export interface SendOptions {
  body?: Buffer;
  headers?: Record<string, string>;
  /** How long 503s with Retry-After are retried before the 503 is returned (default 20 s). */
  unavailableForMs?: number;
}

/** Attempts cut by connection errors before `send` gives up: far more than kills can explain. */
const MAX_INTERRUPTED = 40;
const ATTEMPT_TIMEOUT_MS = 30_000;
/** A 503's Retry-After may name minutes (a tombstone's worst case); polling sooner is allowed and usually succeeds. */
const UNAVAILABLE_POLL_MS = 250;

export class Fleet {
  private readonly slots: Array<OutpostProcess | undefined>;
  kills = 0;

  private constructor(
    private readonly dataDir: string,
    private readonly env: Record<string, string>,
    started: OutpostProcess[],
    private readonly random: () => number,
  ) {
    this.slots = started;
  }

  static async start(dataDir: string, env: Record<string, string>, count: number, random: () => number): Promise<Fleet> {
    const started = await Promise.all(Array.from({ length: count }, () => startOutpost(dataDir, env)));
    return new Fleet(dataDir, env, started, random);
  }

  /** The instances serving now. */
  live(): OutpostProcess[] {
    return this.slots.filter((s): s is OutpostProcess => s !== undefined);
  }

  /** SIGKILL instance `i`, wait `downMs`, start it again (a new port). The others keep serving. */
  async killAndRestart(i: number, downMs: number): Promise<void> {
    const victim = this.slots[i];
    if (!victim) return;
    this.slots[i] = undefined;
    victim.signal('SIGKILL');
    await victim.exited;
    this.kills++;
    await sleep(downMs);
    this.slots[i] = await startOutpost(this.dataDir, this.env);
  }

  async stop(): Promise<void> {
    await Promise.all(this.live().map((s) => s.stop()));
  }

  /** Logs of the instances serving now (for failure messages). */
  logs(): string {
    return this.live()
      .map((s) => `--- outpost pid ${s.pid} (${s.url})\n${s.logs().slice(-4000)}`)
      .join('\n');
  }

  async send(method: string, path: string, options: SendOptions = {}): Promise<Answer> {
    const unavailableUntil = Date.now() + (options.unavailableForMs ?? 20_000);
    let interrupted = 0;
    let unavailable = 0;
    for (;;) {
      const live = this.live();
      const server = live[Math.floor(this.random() * live.length)];
      if (!server) {
        await sleep(50);
        continue;
      }
      let res: Response;
      let bytes: Buffer;
      try {
        res = await fetch(`${server.url}${path}`, {
          method,
          body: options.body ? new Uint8Array(options.body) : undefined,
          headers: options.headers,
          signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
        });
        bytes = Buffer.from(await res.arrayBuffer());
      } catch (err) {
        if (++interrupted > MAX_INTERRUPTED) throw new Error(`${method} ${path}: ${interrupted} attempts cut, last: ${String(err)}`);
        await sleep(50 + this.random() * 150);
        continue;
      }
      if (res.status === 503 && res.headers.has('retry-after') && Date.now() < unavailableUntil) {
        unavailable++;
        await sleep(UNAVAILABLE_POLL_MS);
        continue;
      }
      return { status: res.status, headers: res.headers, bytes, interrupted, unavailable };
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** mulberry32: a small seeded generator, so a run's choices repeat with its seed. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A serial queue per key: operations on one key run one at a time, in call order. */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  async with<T>(key: string, work: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = before.then(() => mine);
    this.tails.set(key, tail);
    await before;
    try {
      return await work();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

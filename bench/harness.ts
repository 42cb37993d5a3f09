import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';

/**
 * Shared pieces of the benchmarks: content generated on the fly (never held whole), peak RSS
 * read from /proc, and a result table that states every figure as a ratio to a peer measured
 * in the same run.
 */

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** The median of the samples (the mean of the two middle ones for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * `size` bytes of incompressible content, produced chunk by chunk: one random MiB with its
 * chunk number stamped in front, so no two chunks are equal and nothing bigger than 1 MiB exists.
 */
export class Content {
  private readonly base: Buffer;
  readonly digest: string;

  constructor(readonly size: number, seed = 1) {
    // xorshift32: fast, deterministic, incompressible enough for storage and transport.
    const block = Buffer.alloc(MiB);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < MiB; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      block.writeUInt32LE(x >>> 0, i);
    }
    this.base = block;
    const hash = createHash('sha256');
    for (const chunk of this.chunks()) hash.update(chunk);
    this.digest = `sha256:${hash.digest('hex')}`;
  }

  *chunks(): Generator<Buffer> {
    for (let at = 0, n = 0; at < this.size; at += MiB, n++) {
      const chunk = Buffer.from(this.base.subarray(0, Math.min(MiB, this.size - at)));
      chunk.writeUInt32LE(n, 0);
      yield chunk;
    }
  }

  stream(): ReadableStream<Uint8Array> {
    const it = this.chunks();
    return new ReadableStream({
      pull(c) {
        const next = it.next();
        if (next.done) c.close();
        else c.enqueue(new Uint8Array(next.value.buffer, next.value.byteOffset, next.value.byteLength));
      },
    });
  }
}

/** Resident set size now, and its peak since the process started (VmHWM), in bytes. */
export function rss(pid: number): { now: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { now: kb('VmRSS'), peak: kb('VmHWM') };
}

/** Direct children of a process (for wrangler, whose workerd child does the work). */
export function descendants(pid: number): number[] {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
  return children.flatMap((c) => [c, ...descendants(c)]);
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const start = process.hrtime.bigint();
  const value = await fn();
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, value };
}

/** Drains a response body, returning its sha256 and size. */
export async function drain(body: ReadableStream<Uint8Array> | null): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  if (body) {
    for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      size += chunk.byteLength;
    }
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

export interface Row {
  subject: string;
  operation: string;
  seconds: number;
  bytes: number;
  peer?: { label: string; seconds: number };
  rssGrowth?: number;
}

export function report(title: string, rows: Row[]): string {
  const lines = [`\n${title}`, '| subject | operation | MiB/s | vs peer | peak RSS growth |', '|---|---|---|---|---|'];
  for (const r of rows) {
    const rate = r.bytes / MiB / r.seconds;
    const vs = r.peer ? `${(r.peer.seconds / r.seconds).toFixed(2)}x ${r.peer.label}` : 'n/a (peer)';
    const mem = r.rssGrowth === undefined ? 'n/a' : `${(r.rssGrowth / MiB).toFixed(1)} MiB`;
    lines.push(`| ${r.subject} | ${r.operation} | ${rate.toFixed(1)} | ${vs} | ${mem} |`);
  }
  return lines.join('\n');
}

export interface Server {
  label: string;
  url: string;
  pid: number;
  stop(): void;
}

export async function freePort(): Promise<number> {
  return new Promise((done) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => done(port));
    });
  });
}

async function waitFor(url: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited early:\n${output()}`);
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer:\n${output()}`);
}

export async function start(
  label: string,
  command: string,
  args: string[],
  env: Record<string, string>,
  port: number,
  options: { cwd?: string; group?: boolean } = {},
): Promise<Server> {
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: options.cwd,
    detached: options.group ?? false,
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/v2/`, child, () => output);
  const pid = child.pid!;
  // A group (wrangler and its workerd children) is stopped as a whole.
  return { label, url, pid, stop: () => (options.group ? process.kill(-pid, 'SIGKILL') : child.kill('SIGKILL')) };
}


/**
 * Streams `content` as the body of one HTTP request with node:http (the same client the AWS
 * SDK uses on Node, so the peer and Outpost are driven alike), without Content-Length.
 */
export function send(method: string, url: string | URL, content: Content): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: { 'Content-Type': 'application/octet-stream' } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    const chunks = content.chunks();
    const pump = () => {
      for (;;) {
        const next = chunks.next();
        if (next.done) return void req.end();
        if (!req.write(next.value)) return void req.once('drain', pump);
      }
    };
    pump();
  });
}

export interface HashedGet {
  status: number;
  digest: string;
  size: number;
  /** From the request's start to the last body byte. */
  seconds: number;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * GET with node:http, hashing the body as it arrives (nothing is kept). `onHeaders` runs once
 * the response's status line and headers are in, e.g. to start a second client right then.
 */
export function getHashed(url: string | URL, headers: Record<string, string> = {}, onHeaders?: () => void): Promise<HashedGet> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      onHeaders?.();
      const hash = createHash('sha256');
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.byteLength;
      });
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          digest: `sha256:${hash.digest('hex')}`,
          size,
          seconds: Number(process.hrtime.bigint() - started) / 1e9,
          headers: res.headers,
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/** A markdown table with a title line, for results that do not fit report()'s columns. */
export function table(title: string, header: string[], rows: string[][]): string {
  return [`\n${title}`, `| ${header.join(' | ')} |`, `|${header.map(() => '---|').join('')}`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Blob, Image } from '../../support/images.js';
import type { ImageIndex } from './oci-layout.js';

/**
 * Distribution 2.8 (Debian's `docker-registry`, installed by scripts/install-test-deps.sh) as a
 * real peer: the upstream a mirror pulls from, or, in proxy mode, Distribution's own
 * pull-through cache as the comparison peer. Each instance gets a temporary directory (config,
 * storage, htpasswd, log) and a free loopback port (`http.addr: 127.0.0.1:0`; the port is read
 * back from the "listening on" line).
 *
 * Distribution logs one JSON line per answered request (log.formatter json), which
 * `requests()` parses. What 2.8 writes, found by running it:
 *   - "response completed" (2xx, 3xx) and "response completed with error" (4xx, 5xx, with
 *     err.code, err.message, err.detail): http.request.method, http.request.uri (path and
 *     query as sent), http.request.host, http.request.useragent, http.request.remoteaddr,
 *     http.request.id, http.response.status, http.response.written (body bytes),
 *     http.response.duration ("1.5ms"), http.response.contenttype, auth.user.name, vars.name
 *     (repository), vars.digest, vars.reference.
 *   - A request refused by auth gets no response line, only a warning "error authorizing
 *     context: basic authentication challenge for realm ..." with the request fields;
 *     `requests()` reports it as status 401 with 0 bytes.
 *   - "authorized request" (before the handler runs) also carries the request fields but no
 *     status: skipped.
 * The Apache-style access log (log.accesslog) is off: it would be a second format on stdout.
 */

const BINARY = '/usr/bin/docker-registry';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
/** How long requests() waits for its marker request to show up in the log. */
const LOG_SYNC_TIMEOUT_MS = 5_000;
/** The query parameter of requests()'s marker request; its lines are left out of the result. */
const SYNC_PARAM = 'outpost-test-log-sync';

export interface Credentials {
  username: string;
  password: string;
}

export interface UpstreamRegistryOptions {
  /** htpasswd auth: clients must send Basic credentials (Distribution's htpasswd is plain Basic). */
  auth?: Credentials & { realm?: string };
  /** Proxy mode: a pull-through cache of `remoteUrl`, logging in there with the credentials. */
  proxy?: { remoteUrl: string; username?: string; password?: string };
}

export interface RegistryRequest {
  method: string;
  /** The path as sent, without the query: /v2/library/app/blobs/sha256:... */
  path: string;
  /** The query parameters, e.g. containerd's ns=docker.io. */
  query: Record<string, string>;
  status: number;
  /**
   * Body bytes (http.response.written). For HEAD, the Content-Length it announced (Go counts the
   * body it discards); 0 for a request refused by auth, which has no response line.
   */
  bytes: number;
  /** The endpoint the path names (distribution-spec "Endpoints"). */
  kind: 'base' | 'catalog' | 'manifest' | 'blob' | 'upload' | 'tags' | 'referrers' | 'other';
  repository?: string;
  /** A manifest's tag or digest, a blob's digest, an upload's id. */
  reference?: string;
  /** `reference` when it is a digest: the blob or manifest the request touched. */
  digest?: string;
  userAgent?: string;
}

export interface UpstreamRegistry {
  /** Base URL, e.g. http://127.0.0.1:41234 (no trailing slash). */
  url: string;
  /** 127.0.0.1:port, as skopeo's docker:// references and hosts.toml want it. */
  host: string;
  port: number;
  /** The instance's temporary directory: config.yml, data/, htpasswd, registry.log. */
  dir: string;
  /** Distribution's JSON log (stdout and stderr). */
  logFile: string;
  /** The credentials clients need, when started with `auth`. */
  credentials?: Credentials;
  /** fetch(url + path), with Basic credentials when the registry has auth. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /**
   * Every request answered so far, in log order. It first sends a marker request and waits for
   * its line, so every response the caller has already read is in the list.
   */
  requests(): Promise<RegistryRequest[]>;
  /** SIGTERM (SIGKILL after 5 s), then removes the temporary directory. Idempotent. */
  stop(): Promise<void>;
}

export async function startUpstreamRegistry(options: UpstreamRegistryOptions = {}): Promise<UpstreamRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'outpost-e2e-registry-'));
  const logFile = join(dir, 'registry.log');
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'info', formatter: 'json', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: join(dir, 'data') },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    // A fixed secret keeps upload state valid across a restart on the same directory.
    http: { addr: '127.0.0.1:0', secret: randomBytes(16).toString('hex') },
  };
  if (options.auth) {
    const path = join(dir, 'htpasswd');
    await writeFile(path, `${bcryptHtpasswdLine(options.auth.username, options.auth.password)}\n`);
    config.auth = { htpasswd: { realm: options.auth.realm ?? 'outpost-test', path } };
  }
  if (options.proxy) {
    const { remoteUrl, username, password } = options.proxy;
    const remote = new URL(remoteUrl);
    if (username !== undefined) {
      // 2.8's proxy hands its username and password only to Bearer token realms it found at
      // start-up (registry/proxy/proxyauth.go), never to a Basic challenge. Credentials in the
      // URL's userinfo are sent as Basic by Go's HTTP client on every request to the remote.
      remote.username = encodeURIComponent(username);
      remote.password = encodeURIComponent(password ?? '');
    }
    config.proxy = { remoteurl: remote.href.replace(/\/$/, ''), ...(username !== undefined ? { username, password: password ?? '' } : {}) };
  }
  // JSON is YAML: no hand-written escaping of paths and passwords.
  await writeFile(join(dir, 'config.yml'), JSON.stringify(config, null, 2));

  let url = '';
  const daemon = await startDaemon({
    label: 'docker-registry',
    command: BINARY,
    args: ['serve', join(dir, 'config.yml')],
    logFile,
    // REGISTRY_* variables would override the config file.
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_'))),
    ready: async (log) => {
      const m = /"msg":"listening on 127\.0\.0\.1:(\d+)"/.exec(log);
      if (!m) return false;
      url = `http://127.0.0.1:${m[1]}`;
      // Marked like requests()'s marker, so the probe is not among the requests a test sees.
      const res = await fetch(`${url}/v2/?${SYNC_PARAM}=start`).catch(() => undefined);
      await res?.arrayBuffer();
      return res?.status === 200 || res?.status === 401;
    },
  });

  const credentials = options.auth ? { username: options.auth.username, password: options.auth.password } : undefined;
  const authorization = credentials ? basicAuth(credentials) : undefined;
  const fetchWithAuth = (path: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    if (authorization && !headers.has('authorization')) headers.set('authorization', authorization);
    return fetch(`${url}${path}`, { ...init, headers });
  };
  const port = Number(new URL(url).port);
  let stopped = false;

  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    dir,
    logFile,
    credentials,
    fetch: fetchWithAuth,
    async requests() {
      const marker = randomUUID();
      await (await fetchWithAuth(`/v2/?${SYNC_PARAM}=${marker}`)).arrayBuffer();
      const deadline = Date.now() + LOG_SYNC_TIMEOUT_MS;
      for (;;) {
        const all = parseRequests(await readFile(logFile, 'utf8'));
        if (all.some((r) => r.query[SYNC_PARAM] === marker)) return all.filter((r) => r.query[SYNC_PARAM] === undefined);
        if (Date.now() > deadline) throw new Error(`docker-registry did not log the marker request within ${LOG_SYNC_TIMEOUT_MS} ms (${logFile})`);
        await sleep(20);
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await daemon.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The per-request lines of a Distribution JSON log (see the top of this file). */
export function parseRequests(log: string): RegistryRequest[] {
  const out: RegistryRequest[] = [];
  const lines = log.split('\n');
  // A last line without its newline may still be being written.
  if (!log.endsWith('\n')) lines.pop();
  for (const line of lines) {
    if (!line.startsWith('{')) continue;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    const method = entry['http.request.method'];
    const uri = entry['http.request.uri'];
    const msg = String(entry.msg ?? '');
    if (typeof method !== 'string' || typeof uri !== 'string') continue;
    let status: number;
    let bytes = 0;
    if (typeof entry['http.response.status'] === 'number') {
      status = entry['http.response.status'];
      bytes = typeof entry['http.response.written'] === 'number' ? entry['http.response.written'] : 0;
    } else if (msg.startsWith('error authorizing context')) {
      // A challenge is a 401; any other failure of the access controller answers 400.
      status = msg.includes('challenge') ? 401 : 400;
    } else {
      continue;
    }
    const q = uri.indexOf('?');
    const path = q < 0 ? uri : uri.slice(0, q);
    const query = Object.fromEntries(new URLSearchParams(q < 0 ? '' : uri.slice(q + 1)));
    const userAgent = typeof entry['http.request.useragent'] === 'string' ? entry['http.request.useragent'] : undefined;
    out.push({ method, path, query, status, bytes, ...endpoint(path), userAgent });
  }
  return out;
}

/** What a /v2/ path names: distribution-spec's endpoint table, read from the end (names hold slashes). */
function endpoint(rawPath: string): Pick<RegistryRequest, 'kind' | 'repository' | 'reference' | 'digest'> {
  let path = rawPath;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    // Keep it as sent.
  }
  if (path === '/v2/' || path === '/v2') return { kind: 'base' };
  if (path === '/v2/_catalog') return { kind: 'catalog' };
  const upload = /^\/v2\/(.+)\/blobs\/uploads\/?(.*)$/.exec(path);
  if (upload) return { kind: 'upload', repository: upload[1], reference: upload[2] || undefined };
  if (/^\/v2\/(.+)\/tags\/list$/.test(path)) return { kind: 'tags', repository: path.slice(4, -'/tags/list'.length) };
  const m = /^\/v2\/(.+)\/(manifests|blobs|referrers)\/([^/]+)$/.exec(path);
  if (!m) return { kind: 'other' };
  const kind = m[2] === 'manifests' ? 'manifest' : m[2] === 'blobs' ? 'blob' : 'referrers';
  const reference = m[3]!;
  return { kind, repository: m[1], reference, digest: /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(reference) ? reference : undefined };
}

/**
 * Pushes an image, or a multi-platform index with all its images, to `repository` and tags the
 * top manifest `tag`, over plain HTTP (no skopeo): blobs the repository already has (a shared
 * layer) are not uploaded again. Returns the digest of the tagged manifest.
 */
export async function seedImage(up: UpstreamRegistry, repository: string, tag: string, image: Image | ImageIndex): Promise<string> {
  if ('index' in image) {
    // Distribution refuses an index whose manifests it does not have yet.
    for (const child of image.images) await pushImage(up, repository, child, child.manifest.digest);
    await putManifest(up, repository, tag, image.index);
    return image.index.digest;
  }
  await pushImage(up, repository, image, tag);
  return image.manifest.digest;
}

async function pushImage(up: UpstreamRegistry, repository: string, image: Image, reference: string): Promise<void> {
  const blobs = [image.config, ...image.layers].filter((b, i, all) => all.findIndex((o) => o.digest === b.digest) === i);
  await Promise.all(blobs.map((b) => seedBlob(up, repository, b)));
  await putManifest(up, repository, reference, image.manifest);
}

/** HEAD, then POST and PUT ?digest= (Distribution 2.8 has no monolithic POST: it ignores the body). */
export async function seedBlob(up: UpstreamRegistry, repository: string, content: Blob): Promise<void> {
  const head = await up.fetch(`/v2/${repository}/blobs/${content.digest}`, { method: 'HEAD' });
  if (head.status === 200) return;
  const started = await up.fetch(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  await expectStatus(started, 202, `POST upload to ${repository}`);
  const location = new URL(started.headers.get('location')!, up.url);
  location.searchParams.set('digest', content.digest);
  const put = await up.fetch(location.pathname + location.search, {
    method: 'PUT',
    body: new Uint8Array(content.bytes),
    headers: { 'content-type': 'application/octet-stream' },
  });
  await expectStatus(put, 201, `PUT blob ${content.digest} to ${repository}`);
}

async function putManifest(up: UpstreamRegistry, repository: string, reference: string, manifest: Blob): Promise<void> {
  const res = await up.fetch(`/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    body: new Uint8Array(manifest.bytes),
    headers: { 'content-type': manifest.mediaType },
  });
  await expectStatus(res, 201, `PUT manifest ${repository}:${reference}`);
  const digest = res.headers.get('docker-content-digest');
  if (digest !== manifest.digest) throw new Error(`PUT manifest ${repository}:${reference}: registry says ${digest}, expected ${manifest.digest}`);
}

async function expectStatus(res: Response, status: number, what: string): Promise<void> {
  const body = await res.text();
  if (res.status !== status) throw new Error(`${what}: ${res.status} (expected ${status}): ${body}`);
}

export function basicAuth({ username, password }: Credentials): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

export interface Daemon {
  pid: number;
  /** SIGTERM, then SIGKILL if it has not exited in time. Idempotent. */
  stop(): Promise<void>;
}

export interface DaemonOptions {
  /** What the process is, for error messages. */
  label: string;
  command: string;
  args: string[];
  /** stdout and stderr go here (appended): the daemon's log, readable while it runs. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  /** Polled with the log so far until it answers true; the daemon is then ready. */
  ready: (log: string) => Promise<boolean> | boolean;
  startTimeoutMs?: number;
}

const running = new Set<() => void>();
process.once('exit', () => {
  for (const kill of running) kill();
});

/**
 * A long-running peer (docker-registry, containerd) whose log goes to a file rather than a pipe,
 * so that tests can read it at any time. Unlike server.ts's launch(), readiness is the caller's
 * test (a registry with auth answers /v2/ with 401; containerd serves gRPC, not HTTP).
 */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const { label } = options;
  const timeoutMs = options.startTimeoutMs ?? START_TIMEOUT_MS;
  const fd = openSync(options.logFile, 'a');
  const child = spawn(options.command, options.args, { env: options.env ?? process.env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const pid = child.pid;
  if (pid === undefined) {
    const err = await new Promise<Error>((r) => child.once('error', r));
    throw new Error(`could not start ${label} (${options.command}): ${err.message}`);
  }
  const killNow = () => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  };
  running.add(killNow);
  let exitedWith: string | undefined;
  const exited = new Promise<void>((done) =>
    child.once('exit', (code, signal) => {
      exitedWith = String(code ?? signal);
      running.delete(killNow);
      done();
    }),
  );
  const stop = async () => {
    if (exitedWith !== undefined) return;
    child.kill('SIGTERM');
    const timer = setTimeout(killNow, STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  };
  const log = () => readFile(options.logFile, 'utf8').catch(() => '');

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exitedWith !== undefined) throw new Error(`${label} (pid ${pid}) exited during start-up (${exitedWith}); its log:\n${await log()}`);
    try {
      if (await options.ready(await log())) return { pid, stop };
    } catch {
      // Not ready yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${label} (pid ${pid}) was not ready within ${timeoutMs} ms; its log:\n${await log()}`);
    }
    await sleep(25);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * An htpasswd line Distribution accepts (golang.org/x/crypto/bcrypt reads `$2a$`, `$2b$` and
 * `$2y$`), made here so the tests need no apache2-utils. Cost 4, bcrypt's minimum: Distribution
 * checks the password on every request, and at htpasswd's usual cost 10 that costs each request
 * tens of milliseconds of CPU, which benchmarks would measure.
 */
export function bcryptHtpasswdLine(username: string, password: string, cost = 4): string {
  return `${username}:${bcrypt(password, randomBytes(16), cost)}`;
}

/** bcrypt (Provos and Mazieres, 1999) as OpenBSD's bcrypt.c computes it, version 2b. */
export function bcrypt(password: string, salt: Buffer, cost: number): string {
  // The key is the password's bytes with its NUL terminator, at most 72 bytes.
  const key = Buffer.concat([Buffer.from(password, 'utf8'), Buffer.alloc(1)]).subarray(0, 72);
  const state = blowfishInitialState();
  expandKey(state, key, salt);
  for (let i = 0; i < 2 ** cost; i++) {
    expandKey(state, key);
    expandKey(state, salt);
  }
  const text = Buffer.from('OrpheanBeholderScryDoubt');
  const words = [0, 1, 2, 3, 4, 5].map((i) => text.readUInt32BE(i * 4));
  for (let round = 0; round < 64; round++) {
    for (let i = 0; i < 6; i += 2) [words[i], words[i + 1]] = encipher(state, words[i]!, words[i + 1]!);
  }
  const hash = Buffer.alloc(24);
  words.forEach((w, i) => hash.writeUInt32BE(w, i * 4));
  const cost2 = String(cost).padStart(2, '0');
  return `$2b$${cost2}$${bcryptBase64(salt.subarray(0, 16))}${bcryptBase64(hash.subarray(0, 23))}`;
}

interface BlowfishState {
  p: Uint32Array;
  s: Uint32Array;
}

/** Blowfish's P-array and S-boxes are the fractional hex digits of pi, in order: computed once. */
let PI_WORDS: Uint32Array | undefined;
function blowfishInitialState(): BlowfishState {
  if (!PI_WORDS) {
    const words = 18 + 4 * 256;
    const bits = BigInt(words * 32);
    const guard = 64n;
    const one = 1n << (bits + guard);
    // Machin: pi = 16 atan(1/5) - 4 atan(1/239).
    const atanInv = (x: bigint) => {
      let sum = 0n;
      let term = one / x;
      const x2 = x * x;
      for (let k = 0n; term !== 0n; k++) {
        sum += (k % 2n === 0n ? 1n : -1n) * (term / (2n * k + 1n));
        term /= x2;
      }
      return sum;
    };
    const pi = (16n * atanInv(5n) - 4n * atanInv(239n)) >> guard;
    const fraction = pi - (3n << bits);
    PI_WORDS = new Uint32Array(words);
    for (let i = 0; i < words; i++) PI_WORDS[i] = Number((fraction >> (bits - 32n * BigInt(i + 1))) & 0xffffffffn);
  }
  return { p: PI_WORDS.slice(0, 18), s: PI_WORDS.slice(18) };
}

function f(s: Uint32Array, x: number): number {
  return ((((s[x >>> 24]! + s[256 + ((x >>> 16) & 0xff)]!) >>> 0) ^ s[512 + ((x >>> 8) & 0xff)]!) + s[768 + (x & 0xff)]!) >>> 0;
}

function encipher({ p, s }: BlowfishState, left: number, right: number): [number, number] {
  let l = left;
  let r = right;
  for (let i = 0; i < 16; i += 2) {
    l = (l ^ p[i]!) >>> 0;
    r = (r ^ f(s, l)) >>> 0;
    r = (r ^ p[i + 1]!) >>> 0;
    l = (l ^ f(s, r)) >>> 0;
  }
  return [(r ^ p[17]!) >>> 0, (l ^ p[16]!) >>> 0];
}

/** bcrypt's ExpandKey: the Blowfish key schedule, with the salt mixed in when there is one. */
function expandKey(state: BlowfishState, key: Buffer, salt?: Buffer): void {
  let at = 0;
  const keyWord = () => {
    let w = 0;
    for (let i = 0; i < 4; i++) w = ((w << 8) | key[at++ % key.length]!) >>> 0;
    return w;
  };
  for (let i = 0; i < 18; i++) state.p[i] = (state.p[i]! ^ keyWord()) >>> 0;
  let saltAt = 0;
  const saltWord = () => {
    if (!salt) return 0;
    const w = salt.readUInt32BE(saltAt);
    saltAt = (saltAt + 4) % 16;
    return w;
  };
  let l = 0;
  let r = 0;
  const fill = (table: Uint32Array) => {
    for (let i = 0; i < table.length; i += 2) {
      [l, r] = encipher(state, (l ^ saltWord()) >>> 0, (r ^ saltWord()) >>> 0);
      table[i] = l;
      table[i + 1] = r;
    }
  };
  fill(state.p);
  fill(state.s);
}

/** Base64 in bcrypt's alphabet, without padding (same bit order as RFC 4648). */
function bcryptBase64(bytes: Buffer): string {
  const standard = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const bcryptAlphabet = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return [...bytes.toString('base64').replace(/=+$/, '')].map((c) => bcryptAlphabet[standard.indexOf(c)]).join('');
}

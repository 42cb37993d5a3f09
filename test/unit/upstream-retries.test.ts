import { afterEach, describe, expect, it, vi } from 'vitest';
import { RegistryUpstream, type RegistryUpstreamOptions } from '../../src/adapters/upstream/registry-upstream.js';
import { TestClock } from '../support/clock.js';
import { FakeUpstream, expectOk, readBody, recordingSleep, type FakeUpstreamOptions } from '../support/fake-upstream.js';
import { image, randomBlob } from '../support/images.js';

/**
 * Retries with backoff, 429 and Retry-After, and the timeouts of every step (transport.ts,
 * bodies.ts). Backoff waits go through a recording `sleep`; timeouts through vitest's fake
 * setTimeout: nothing here waits in real time.
 */

const OCI = 'application/vnd.oci.image.manifest.v1+json';
const TIMEOUTS = { headersMs: 30_000, tokenMs: 15_000, idleMs: 10_000 };

function setup(fake: FakeUpstreamOptions = {}, client: Partial<RegistryUpstreamOptions> = {}) {
  const clock = new TestClock();
  const up = new FakeUpstream({ clock, ...fake });
  up.addImage('library/nginx', 'latest', image());
  const layer = randomBlob(100_000);
  up.addBlob('library/nginx', layer.bytes);
  const { sleep, waits } = recordingSleep();
  const events: Record<string, unknown>[] = [];
  // random() = 0: no jitter, so the backoff is exactly base * 2^n.
  const upstream = new RegistryUpstream({ url: up.url, fetch: up.fetch, clock, sleep, random: () => 0, timeouts: TIMEOUTS, log: (e) => events.push(e), ...client });
  const pull = () => upstream.manifest('library/nginx', 'latest', 'GET', [OCI]);
  return { up, upstream, clock, waits, events, pull, layer };
}

/** Drives fake timers until `p` settles. */
async function settle<T>(p: Promise<T>, stepMs = 1_000, maxMs = 600_000): Promise<T> {
  let done = false;
  const tracked = p.finally(() => (done = true));
  for (let t = 0; !done && t < maxMs; t += stepMs) await vi.advanceTimersByTimeAsync(stepMs);
  return tracked;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('retries', () => {
  it.each([500, 502, 503, 504])('retries a %s with exponential backoff, then answers', async (status) => {
    const { up, waits, pull } = setup();
    up.fault({ kind: 'status', status, times: 3 });
    expect((await pull()).kind).toBe('ok');
    expect(up.requests).toHaveLength(4);
    expect(waits).toEqual([250, 500, 1000]);
  });

  it('answers unavailable after the last attempt, naming host and status but not the body', async () => {
    const { up, waits, pull } = setup();
    up.fault({ kind: 'status', status: 503, times: Infinity, body: `<html>${'upstream said something long '.repeat(500)}</html>` });
    const r = await pull();
    expect(r).toEqual({ kind: 'unavailable', status: 503, message: 'registry.test answered 503 to the manifest request' });
    expect(up.requests).toHaveLength(4);
    expect(waits).toHaveLength(3);
  });

  it('does not retry a 501', async () => {
    const { up, pull } = setup();
    up.fault({ kind: 'status', status: 501, times: Infinity });
    expect(await pull()).toMatchObject({ kind: 'unavailable', status: 501 });
    expect(up.requests).toHaveLength(1);
  });

  it('retries connection errors, and answers unavailable when they persist', async () => {
    const a = setup();
    a.up.fault({ kind: 'connection-error', times: 2 });
    expect((await a.pull()).kind).toBe('ok');
    const b = setup();
    b.up.fault({ kind: 'connection-error', times: Infinity });
    expect(await b.pull()).toEqual({ kind: 'unavailable', message: 'registry.test: connection failed' });
    expect(b.up.requests).toHaveLength(4);
  });

  it('takes the attempts, delays and jitter it is given', async () => {
    const { up, waits, pull } = setup({}, { retries: { attempts: 6, baseDelayMs: 100, maxDelayMs: 1_000 }, random: () => 0.5 });
    up.fault({ kind: 'status', status: 500, times: Infinity });
    await pull();
    expect(up.requests).toHaveLength(6);
    // Capped at 1000, less 25 % jitter (random 0.5 takes off half of the 50 %).
    expect(waits).toEqual([75, 150, 300, 600, 750]);
  });

  it('logs each retry with its reason', async () => {
    const { up, events, pull } = setup();
    up.fault({ kind: 'status', status: 502 });
    await pull();
    expect(events).toContainEqual({ event: 'upstream.retry', host: 'registry.test', attempt: 1, delayMs: 250, reason: 'status 502' });
  });

  it('retries the token request too', async () => {
    const { up, pull } = setup({ auth: { scheme: 'bearer' } });
    up.fault({ kind: 'status', status: 503, match: { host: 'auth.registry.test' } });
    expect((await pull()).kind).toBe('ok');
    expect(up.requestsTo('auth.registry.test')).toHaveLength(2);
  });

  it('never retries once a body is handed over: a blob that breaks off errors its stream', async () => {
    const { up, upstream, layer } = setup();
    up.fault({ kind: 'disconnect', afterBytes: 40_000 });
    const r = expectOk(await upstream.blob('library/nginx', layer.digest));
    const read = await readBody(r.body);
    expect(read.error).toBeDefined();
    expect(read.bytes.byteLength).toBeLessThan(layer.size);
    expect(up.requests).toHaveLength(1);
  });
});

describe('429 and Retry-After', () => {
  it.each([
    // [Retry-After, waited (ms)]
    ['2', 2_000],
    ['0', 0],
    ['HTTP_DATE+3', 3_000],
    ['5', 5_000],
  ])('waits out Retry-After %s within the bound, then retries', async (header, waited) => {
    const { up, waits, pull, clock } = setup();
    const value = header === 'HTTP_DATE+3' ? new Date(clock.now() + 3_000).toUTCString() : header;
    up.fault({ kind: 'status', status: 429, headers: { 'retry-after': value } });
    expect((await pull()).kind).toBe('ok');
    expect(waits).toEqual([waited]);
  });

  it.each([
    // [Retry-After, retryAfterSeconds answered]
    ['6', 6],
    ['3600', 3600],
    ['HTTP_DATE+120', 120],
    [undefined, 60],
    ['soon', 60],
  ])('answers rate-limited at once for Retry-After %s', async (header, seconds) => {
    const { up, waits, pull, clock } = setup();
    const value = header === 'HTTP_DATE+120' ? new Date(clock.now() + 120_000).toUTCString() : header;
    up.fault({ kind: 'status', status: 429, headers: value === undefined ? {} : { 'retry-after': value }, times: Infinity });
    expect(await pull()).toEqual({ kind: 'rate-limited', retryAfterSeconds: seconds });
    expect(waits).toEqual([]);
    expect(up.requests).toHaveLength(1);
  });

  it('answers rate-limited when short waits run out of attempts', async () => {
    const { up, waits, pull } = setup();
    up.fault({ kind: 'status', status: 429, headers: { 'retry-after': '1' }, times: Infinity });
    expect(await pull()).toEqual({ kind: 'rate-limited', retryAfterSeconds: 1 });
    expect(waits).toEqual([1_000, 1_000, 1_000]);
  });

  it('takes a smaller bound on waiting', async () => {
    const { up, pull } = setup({}, { retries: { maxRetryAfterMs: 1_000 } });
    up.fault({ kind: 'status', status: 429, headers: { 'retry-after': '2' } });
    expect(await pull()).toEqual({ kind: 'rate-limited', retryAfterSeconds: 2 });
  });
});

describe('timeouts', () => {
  it('gives up on headers that do not come, retrying each attempt', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { up, pull } = setup({}, { retries: { attempts: 2 } });
    up.fault({ kind: 'hang', times: Infinity });
    expect(await settle(pull())).toEqual({ kind: 'unavailable', message: 'registry.test: no response within 30000 ms' });
    expect(up.requests).toHaveLength(2);
  });

  it('recovers when only the first attempt hangs', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { up, pull } = setup();
    up.fault({ kind: 'hang' });
    expect((await settle(pull())).kind).toBe('ok');
  });

  it('times out a fetch that ignores its abort signal', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { up, pull } = setup({}, { retries: { attempts: 1 } });
    up.fault({ kind: 'respond', respond: () => new Promise<Response>(() => undefined) });
    expect(await settle(pull())).toMatchObject({ kind: 'unavailable', message: 'registry.test: no response within 30000 ms' });
  });

  it('times out the token request on its own, shorter timeout', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { up, pull } = setup({ auth: { scheme: 'bearer' } }, { retries: { attempts: 1 } });
    up.fault({ kind: 'hang', match: { host: 'auth.registry.test' } });
    expect(await settle(pull())).toEqual({ kind: 'unavailable', message: 'token service: auth.registry.test: no response within 15000 ms' });
  });

  it('errors a blob body that stalls longer than the idle timeout', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { up, upstream, layer } = setup();
    up.fault({ kind: 'stall', afterBytes: 20_000 });
    const r = expectOk(await upstream.blob('library/nginx', layer.digest));
    const read = await settle(readBody(r.body));
    expect(read.bytes.byteLength).toBe(20_000);
    expect(String(read.error)).toContain('registry.test: no bytes for 10000 ms');
  });

  it('lets a slow body through while each chunk comes within the idle timeout', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { up, upstream, layer } = setup();
    up.fault({ kind: 'slow', chunkBytes: 10_000, delayMs: 9_000 });
    const r = expectOk(await upstream.blob('library/nginx', layer.digest));
    const read = await settle(readBody(r.body));
    expect(read.error).toBeUndefined();
    expect(read.bytes.equals(layer.bytes)).toBe(true);
  });

  it('errors a body that trickles slower than the idle timeout', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { up, upstream, layer } = setup();
    up.fault({ kind: 'slow', chunkBytes: 10_000, delayMs: 11_000 });
    const r = expectOk(await upstream.blob('library/nginx', layer.digest));
    const read = await settle(readBody(r.body));
    expect(read.bytes.byteLength).toBe(0);
    expect(read.error).toBeDefined();
  });

  it('does not count the time the caller takes between reads', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { upstream, layer } = setup({ chunkBytes: 50_000 });
    const r = expectOk(await upstream.blob('library/nginx', layer.digest));
    const reader = r.body.getReader();
    expect((await reader.read()).value?.byteLength).toBe(50_000);
    await vi.advanceTimersByTimeAsync(60_000);
    expect((await reader.read()).value?.byteLength).toBe(50_000);
    expect((await reader.read()).done).toBe(true);
  });

  it('answers unavailable for a manifest whose body stalls', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { up, pull } = setup();
    up.fault({ kind: 'stall', afterBytes: 10 });
    expect(await settle(pull())).toEqual({ kind: 'unavailable', message: 'registry.test: no bytes for 10000 ms' });
  });
});

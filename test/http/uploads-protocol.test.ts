import { describe, expect, it } from 'vitest';
import { COMMIT_CLAIM_MS, MAX_UPLOAD_AGE_MS } from '../../src/core/registry/uploads.js';
import type { Json } from '../../src/ports/meta-index.js';
import { randomBlob, sha256 } from '../support/images.js';
import { testApp } from '../support/app.js';
import { expectOciError } from '../support/oci-errors.js';
import {
  expectCreated,
  expectUploadGone,
  finish,
  gate,
  intercept,
  never,
  partObjects,
  patch,
  patchBytes,
  startUpload,
  until,
} from '../support/uploads.js';

/**
 * The upload protocol of core/registry/uploads.ts under concurrency and failure: what each
 * chunk writes to the index, two requests racing for one offset, a complete racing an append,
 * replies lost between the index and the instance, and a process that dies between two writes.
 * Interleavings are forced with gates on the ports, not left to timing.
 */

type T = ReturnType<typeof testApp>;
const isPartObject = (args: unknown[]) => String(args[0]).startsWith('uploads/');
const isContent = (args: unknown[]) => String(args[0]).startsWith('blobs/');
const pkOf = (args: unknown[]) => (args[0] as { pk: string }).pk;

/** Holds every store write matching `which` at a gate until it is opened. */
function holdPuts(t: T, which: (args: unknown[]) => boolean) {
  const g = gate();
  intercept(t.store, 'put', async (original, ...args) => {
    if (which(args)) await g.wait();
    return (original as (...a: unknown[]) => Promise<unknown>)(...args);
  });
  return g;
}

describe('what the index holds', () => {
  it('a 1000-chunk upload writes a bounded amount per chunk to the index (no item grows with the upload)', async () => {
    const t = testApp();
    let bytes = 0;
    let largest = 0;
    const count = (value: unknown) => {
      const n = JSON.stringify(value).length;
      bytes += n;
      largest = Math.max(largest, n);
    };
    for (const method of ['put', 'putIfAbsent'] as const) {
      intercept(t.index, method, (original, ...args) => {
        count(args[1]);
        return (original as (...a: unknown[]) => unknown)(...args);
      });
    }
    intercept(t.index, 'compareAndSet', (original, ...args) => {
      count(args[2]);
      return (original as (...a: unknown[]) => unknown)(...args);
    });
    const location = await startUpload(t);
    await patchBytes(t, location, 1000);
    const perChunk = bytes / 1000;
    expect(perChunk).toBeLessThan(200);
    expect(largest).toBeLessThan(300);
    expect((await finish(t, location, sha256(new Uint8Array(1000).fill(7)))).status).toBe(201);
  });

  it('each chunk is one store object, and a completed upload leaves none behind', async () => {
    const t = testApp();
    const b = randomBlob(30);
    const location = await startUpload(t);
    for (const [from, to] of [
      [0, 10],
      [10, 30],
    ] as const) {
      expect((await patch(t, location, b.bytes.subarray(from, to))).status).toBe(202);
    }
    expect(partObjects(t, location)).toHaveLength(2);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
    expect(partObjects(t, location)).toEqual([]);
  });
});

describe('two appends at one offset', () => {
  it('both stored before either is recorded: exactly one wins, the other is 416 and its object is deleted', async () => {
    const t = testApp();
    const [x, y] = [randomBlob(10), randomBlob(10)];
    const location = await startUpload(t);
    const held = holdPuts(t, isPartObject);
    const racing = Promise.all([patch(t, location, x.bytes, '0-9'), patch(t, location, y.bytes, '0-9')]);
    await until(() => held.arrived === 2, 'both chunks to reach the store');
    held.open();
    const results = await racing;
    expect(results.map((r) => r.status).sort()).toEqual([202, 416]);
    const loser = results.find((r) => r.status === 416)!;
    expect(loser.headers.get('range')).toBe('0-9');
    expect(partObjects(t, location)).toHaveLength(1);
    const winner = results[0]!.status === 202 ? x : y;
    await expectCreated(t, await finish(t, location, winner.digest), 'repo', winner);
  });
});

describe('replies lost between the instance and the index', () => {
  it('a part item written whose reply is lost and retried by the adapter (false the second time): 202', async () => {
    const t = testApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    let retried = false;
    intercept(t.index, 'putIfAbsent', async (original, ...args) => {
      const call = original as (...a: unknown[]) => Promise<boolean>;
      if (retried || !pkOf(args).startsWith('upload#')) return call(...args);
      retried = true;
      await call(...args);
      return call(...args);
    });
    const res = await patch(t, location, b.bytes.subarray(0, 10), '0-9');
    expect(retried).toBe(true);
    expect(res.status, await res.clone().text()).toBe(202);
    expect(res.headers.get('range')).toBe('0-9');
    expect((await patch(t, location, b.bytes.subarray(10), '10-19')).status).toBe(202);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it.each([
    ['a commit', (t: T, location: string, b: ReturnType<typeof randomBlob>) => finish(t, location, b.digest), 201],
    ['a cancel', (t: T, location: string) => t.request(location, { method: 'DELETE' }), 204],
  ] as const)('%s whose delete of the state is retried by the adapter after a lost reply (false the second time) succeeds and deletes the parts', async (_, act, status) => {
    const t = testApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    for (const [from, to] of [[0, 10], [10, 20]] as const) expect((await patch(t, location, b.bytes.subarray(from, to))).status).toBe(202);
    let retried = false;
    intercept(t.index, 'delete', async (original, ...args) => {
      const call = original as (...a: unknown[]) => Promise<boolean>;
      if (retried || pkOf(args) !== 'upload') return call(...args);
      retried = true;
      await call(...args);
      return call(...args);
    });
    const res = await act(t, location, b);
    expect(retried).toBe(true);
    expect(res.status, await res.clone().text()).toBe(status);
    expect(partObjects(t, location)).toEqual([]);
  });

  it.each([
    ['the part item', 'putIfAbsent', (args: unknown[]) => pkOf(args).startsWith('upload#')],
    ['the state', 'compareAndSet', (args: unknown[]) => pkOf(args) === 'upload'],
  ] as const)('%s written, its reply lost (an error): the PATCH is 202 all the same', async (_, method, matches) => {
    const t = testApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    let lost = false;
    intercept(t.index, method, async (original, ...args) => {
      const result = await (original as (...a: unknown[]) => Promise<unknown>)(...args);
      if (!lost && matches(args)) {
        lost = true;
        throw new Error('connection reset');
      }
      return result;
    });
    const res = await patch(t, location, b.bytes.subarray(0, 10), '0-9');
    expect(lost).toBe(true);
    expect(res.status, await res.clone().text()).toBe(202);
    expect((await t.request(location)).headers.get('range')).toBe('0-9');
    expect((await patch(t, location, b.bytes.subarray(10), '10-19')).status).toBe(202);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it('a PATCH that failed after its chunk was recorded, retried by the client: 416 with the Range that includes it', async () => {
    const t = testApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    const restore = intercept(t.index, 'compareAndSet', (original, ...args) =>
      pkOf(args) === 'upload' ? Promise.reject(new Error('index unavailable')) : (original as (...a: unknown[]) => unknown)(...args),
    );
    expect((await patch(t, location, b.bytes.subarray(0, 10), '0-9')).status).toBe(500);
    restore();
    const retry = await patch(t, location, b.bytes.subarray(0, 10), '0-9');
    await expectOciError(retry, { status: 416, code: 'BLOB_UPLOAD_INVALID' });
    expect(retry.headers.get('range')).toBe('0-9');
    expect((await patch(t, location, b.bytes.subarray(10), '10-19')).status).toBe(202);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });
});

describe('a process that dies between two writes', () => {
  it('between the part item and the state write: a status GET and a further PATCH roll the state forward', async () => {
    const t = testApp();
    const b = randomBlob(30);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes.subarray(0, 10), '0-9')).status).toBe(202);
    let crashed = false;
    intercept(t.index, 'compareAndSet', (original, ...args) => {
      if (!crashed && pkOf(args) === 'upload') {
        crashed = true;
        return never();
      }
      return (original as (...a: unknown[]) => unknown)(...args);
    });
    void patch(t, location, b.bytes.subarray(10, 20), '10-19');
    await until(() => crashed, 'the second PATCH to reach its state write');
    const status = await t.request(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-19');
    const next = await patch(t, location, b.bytes.subarray(20), '20-29');
    expect(next.status, await next.clone().text()).toBe(202);
    expect(next.headers.get('range')).toBe('0-29');
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it('between the part object and the part item: the object is not part of the upload, and the PATCH can be sent again', async () => {
    const t = testApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    let crashed = false;
    intercept(t.index, 'putIfAbsent', (original, ...args) => {
      if (!crashed && pkOf(args).startsWith('upload#')) {
        crashed = true;
        return never();
      }
      return (original as (...a: unknown[]) => unknown)(...args);
    });
    void patch(t, location, b.bytes.subarray(0, 10), '0-9');
    await until(() => crashed, 'the PATCH to reach its part item');
    expect((await t.request(location)).headers.get('range')).toBe('0-0');
    expect((await patch(t, location, b.bytes.subarray(0, 10), '0-9')).status).toBe(202);
    expect((await patch(t, location, b.bytes.subarray(10), '10-19')).status).toBe(202);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it('a commit that claimed the upload and died: once the claim expires the upload is as it was', async () => {
    const t = testApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes, '0-19')).status).toBe(202);
    let crashed = false;
    intercept(t.index, 'put', (original, ...args) => {
      if (!crashed && pkOf(args).startsWith('ref#') && (args[0] as { sk: string }).sk.startsWith('link:')) {
        crashed = true;
        return never();
      }
      return (original as (...a: unknown[]) => unknown)(...args);
    });
    void finish(t, location, b.digest);
    await until(() => crashed, 'the PUT to reach its link');
    // While claimed, the upload answers its status but takes no chunk and no other completion.
    expect((await t.request(location)).headers.get('range')).toBe('0-19');
    await expectOciError(await patch(t, location, randomBlob(5).bytes, '20-24'), { status: 416, code: 'BLOB_UPLOAD_INVALID' });
    await expectOciError(await finish(t, location, b.digest), { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    t.clock.advance(COMMIT_CLAIM_MS);
    expect((await t.request(location)).headers.get('range')).toBe('0-19');
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
    expect(partObjects(t, location)).toEqual([]);
  });
});

describe('a complete racing an append', () => {
  it('the append records its chunk first: the PUT is 416 with the new Range and links nothing; the upload goes on', async () => {
    const t = testApp();
    const b = randomBlob(30);
    const location = await startUpload(t);
    for (const [from, to] of [
      [0, 10],
      [10, 20],
    ] as const) {
      expect((await patch(t, location, b.bytes.subarray(from, to))).status).toBe(202);
    }
    const prefix = b.bytes.subarray(0, 20);
    const held = holdPuts(t, isContent);
    const put = finish(t, location, sha256(prefix));
    await until(() => held.arrived === 1, 'the PUT to reach the content write');
    const appended = await patch(t, location, b.bytes.subarray(20), '20-29');
    expect(appended.status).toBe(202);
    held.open();
    const res = await put;
    await expectOciError(res, { status: 416, code: 'BLOB_UPLOAD_INVALID' });
    expect(res.headers.get('range')).toBe('0-29');
    expect((await t.request(`/v2/repo/blobs/${sha256(prefix)}`)).status).toBe(404);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it('the complete claims the upload first: the append is refused and its object deleted; the PUT is 201', async () => {
    const t = testApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes.subarray(0, 10))).status).toBe(202);
    expect((await patch(t, location, b.bytes.subarray(10))).status).toBe(202);
    const held = holdPuts(t, isPartObject);
    const appended = patch(t, location, randomBlob(5).bytes, '20-24');
    await until(() => held.arrived === 1, 'the PATCH to reach the store');
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
    held.open();
    await expectOciError(await appended, { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    expect(partObjects(t, location)).toEqual([]);
    await expectUploadGone(t, location);
  });
});

describe('two completes', () => {
  it('a commit that finds the claim of one that then failed and gave it back claims it next and is 201', async () => {
    const t = testApp();
    const b = randomBlob(20);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes)).status).toBe(202);
    // The first commit's link fails once, after its claim: it gives the claim back and answers an error.
    const linked = gate();
    let failed = false;
    // Armed when the second commit's claim finds the slot taken: the next read of the slot then
    // lets the first commit fail and give its claim back before the read is answered.
    let armed = false;
    intercept(t.index, 'putIfAbsent', async (original, ...args) => {
      const call = original as (...a: unknown[]) => Promise<boolean>;
      if (!failed && pkOf(args).startsWith('blob#')) {
        failed = true;
        await linked.wait();
        throw new Error('index unavailable');
      }
      const took = await call(...args);
      if (failed && !took && pkOf(args).startsWith('upload#')) armed = true;
      return took;
    });
    const first = finish(t, location, b.digest);
    await until(() => linked.arrived === 1, 'the first commit to hold the claim');
    let released = false;
    intercept(t.index, 'get', async (original, ...args) => {
      if (armed && !released && pkOf(args).startsWith('upload#')) {
        released = true;
        linked.open();
        await first;
      }
      return (original as (...a: unknown[]) => Promise<unknown>)(...args);
    });
    const second = await finish(t, location, b.digest);
    expect((await first).status).toBe(500);
    expect(released).toBe(true);
    await expectCreated(t, second, 'repo', b);
  });

  it('both verify the content; one claims it and is 201, the other 404; the chunks are deleted once', async () => {
    const t = testApp();
    const b = randomBlob(30);
    const location = await startUpload(t);
    expect((await patch(t, location, b.bytes.subarray(0, 10))).status).toBe(202);
    expect((await patch(t, location, b.bytes.subarray(10, 20))).status).toBe(202);
    const held = holdPuts(t, isContent);
    let deletes = 0;
    intercept(t.store, 'delete', (original, ...args) => {
      if (isPartObject(args)) deletes++;
      return (original as (...a: unknown[]) => unknown)(...args);
    });
    const racing = Promise.all([finish(t, location, b.digest, b.bytes.subarray(20)), finish(t, location, b.digest, b.bytes.subarray(20))]);
    await until(() => held.arrived === 2, 'both PUTs to reach the content write');
    held.open();
    const results = await racing;
    expect(results.map((r) => r.status).sort()).toEqual([201, 404]);
    expect(deletes).toBe(2);
    expect(partObjects(t, location)).toEqual([]);
    await expectCreated(t, results.find((r) => r.status === 201)!, 'repo', b);
  });
});

describe('expiry', () => {
  it('chunk items outlive the state however long appends keep extending it', async () => {
    const ttl = 60 * 60 * 1000;
    const t = testApp({ uploadTtlMs: ttl });
    const b = randomBlob(48);
    const location = await startUpload(t);
    // 48 chunks an hour apart less a minute: two days, far beyond the uploadTtlMs an item written at the start would get.
    for (let i = 0; i < 48; i++) {
      t.clock.advance(ttl - 60_000);
      expect((await patch(t, location, b.bytes.subarray(i, i + 1), `${i}-${i}`)).status).toBe(202);
    }
    const items = await t.index.list<Json>(`upload#${location.split('/').pop()}`, { limit: 1000 });
    expect(items).toHaveLength(48);
    t.clock.advance(ttl - 60_000);
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
  });

  it(`an upload is forgotten MAX_UPLOAD_AGE_MS after it started, however active`, async () => {
    const ttl = 24 * 60 * 60 * 1000;
    const t = testApp({ uploadTtlMs: ttl });
    const location = await startUpload(t);
    let elapsed = 0;
    for (let i = 0; elapsed + ttl - 60_000 < MAX_UPLOAD_AGE_MS; i++) {
      t.clock.advance(ttl - 60_000);
      elapsed += ttl - 60_000;
      expect((await patch(t, location, new Uint8Array([i]), `${i}-${i}`)).status).toBe(202);
    }
    t.clock.advance(MAX_UPLOAD_AGE_MS - elapsed);
    await expectUploadGone(t, location);
  });
});

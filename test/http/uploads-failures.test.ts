import { describe, expect, it } from 'vitest';
import { randomBlob, sha256 } from '../support/images.js';
import { testApp } from '../support/app.js';
import { expectOciError } from '../support/oci-errors.js';
import { expectCreated, expectNotVisible, finish, intercept, partObjects, patch, startUpload } from '../support/uploads.js';

/**
 * A final PUT that fails leaves the upload as it was before that request: the same Range, the
 * same stored chunks, nothing of the PUT's own body appended; further PATCHes work and a
 * correct PUT then completes it. Faults are injected into the ports once each (a transient
 * store or index error); client faults are a wrong digest or a body that does not match its
 * headers.
 */

type T = ReturnType<typeof testApp>;

interface Case {
  /** Chunks PATCHed before the failing PUT, as [from, to) of the 30-byte blob. */
  before: Array<[number, number]>;
  /** The failing PUT: with the right digest or a wrong one, the bytes [from, to) as its body, extra headers. */
  put: { digest: 'right' | 'wrong'; body?: [number, number]; headers?: Record<string, string> };
  /** A fault injected into the ports for the failing PUT only; returns whether it fired. */
  fault?: (t: T) => () => boolean;
  status: number;
  code: string;
}

/** Fails the first call of `method` on `target` whose first argument matches. */
function failOnce(target: object, method: string, matches: (args: unknown[]) => boolean): () => boolean {
  let fired = false;
  intercept(target as Record<string, unknown>, method, (original, ...args) => {
    if (!fired && matches(args)) {
      fired = true;
      return Promise.reject(new Error(`injected ${method} failure`));
    }
    return (original as (...a: unknown[]) => unknown)(...args);
  });
  return () => fired;
}

const key = (args: unknown[]) => String(args[0]);
const pk = (args: unknown[]) => (args[0] as { pk: string }).pk;
/** The put of a repository link's reference (core/gc/references.ts), the first write of a link. */
const linkReference = (args: unknown[]) => pk(args).startsWith('ref#') && (args[0] as { sk: string }).sk.startsWith('link:');

const twoChunks: Array<[number, number]> = [
  [0, 10],
  [10, 20],
];
const oneChunk: Array<[number, number]> = [[0, 30]];

const CASES: Record<string, Case> = {
  'a digest mismatch': { before: twoChunks, put: { digest: 'wrong' }, status: 400, code: 'DIGEST_INVALID' },
  'a digest mismatch of a single chunk': { before: oneChunk, put: { digest: 'wrong' }, status: 400, code: 'DIGEST_INVALID' },
  'a digest mismatch with a final chunk': { before: twoChunks, put: { digest: 'wrong', body: [20, 30] }, status: 400, code: 'DIGEST_INVALID' },
  'a final chunk shorter than its Content-Range': {
    before: twoChunks,
    put: { digest: 'right', body: [20, 25], headers: { 'Content-Range': '20-29' } },
    status: 400,
    code: 'SIZE_INVALID',
  },
  'a final chunk longer than its Content-Length': {
    before: twoChunks,
    put: { digest: 'right', body: [20, 30], headers: { 'Content-Length': '5' } },
    status: 400,
    code: 'SIZE_INVALID',
  },
  'a store error writing the blob': {
    before: twoChunks,
    put: { digest: 'right', body: [20, 30] },
    fault: (t) => failOnce(t.store, 'put', (a) => key(a).startsWith('blobs/')),
    status: 500,
    code: 'UNKNOWN',
  },
  'a store error reading a chunk': {
    before: twoChunks,
    put: { digest: 'right', body: [20, 30] },
    fault: (t) => failOnce(t.store, 'get', (a) => key(a).startsWith('uploads/')),
    status: 500,
    code: 'UNKNOWN',
  },
  'an index error linking the blob': {
    before: twoChunks,
    put: { digest: 'right', body: [20, 30] },
    fault: (t) => failOnce(t.index, 'put', linkReference),
    status: 500,
    code: 'UNKNOWN',
  },
  'an index error claiming the commit': {
    before: twoChunks,
    put: { digest: 'right', body: [20, 30] },
    fault: (t) => failOnce(t.index, 'putIfAbsent', (a) => pk(a).startsWith('upload#')),
    status: 500,
    code: 'UNKNOWN',
  },
  'an index error ending the upload': {
    before: twoChunks,
    put: { digest: 'right', body: [20, 30] },
    fault: (t) => failOnce(t.index, 'delete', (a) => pk(a) === 'upload'),
    status: 500,
    code: 'UNKNOWN',
  },
  'a store error moving a single chunk into place': {
    before: oneChunk,
    put: { digest: 'right' },
    fault: (t) => failOnce(t.store, 'move', () => true),
    status: 500,
    code: 'UNKNOWN',
  },
  'an index error linking a single chunk moved into place': {
    before: oneChunk,
    put: { digest: 'right' },
    fault: (t) => failOnce(t.index, 'put', linkReference),
    status: 500,
    code: 'UNKNOWN',
  },
};

describe('a final PUT that fails leaves the upload as it was', () => {
  it.each(Object.entries(CASES))('%s', async (_, c) => {
    const t = testApp();
    const b = randomBlob(30);
    const location = await startUpload(t);
    for (const [from, to] of c.before) expect((await patch(t, location, b.bytes.subarray(from, to))).status).toBe(202);
    const offset = c.before.at(-1)![1];
    const range = `0-${offset - 1}`;
    const stored = partObjects(t, location);
    const wrong = sha256('not the content');

    const fired = c.fault?.(t);
    const body = c.put.body && b.bytes.subarray(...c.put.body);
    const res = await finish(t, location, c.put.digest === 'right' ? b.digest : wrong, body, c.put.headers);
    if (c.status === 500) {
      expect(res.status, await res.clone().text()).toBe(500);
      expect(fired?.()).toBe(true);
    } else {
      await expectOciError(res, { status: c.status, code: c.code });
    }
    await expectNotVisible(t, 'repo', wrong);

    // The upload is as it was before the PUT: its Range, its chunks, nothing of the PUT's body.
    const status = await t.request(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe(range);
    expect(partObjects(t, location)).toEqual(stored);

    // It goes on: the rest of the bytes, then a correct PUT.
    if (offset < 30) {
      const more = await patch(t, location, b.bytes.subarray(offset), `${offset}-29`);
      expect(more.status, await more.clone().text()).toBe(202);
      expect(more.headers.get('range')).toBe('0-29');
    }
    await expectCreated(t, await finish(t, location, b.digest), 'repo', b);
    expect(partObjects(t, location)).toEqual([]);
  });

  it.each(Object.entries(CASES).filter(([, c]) => c.status === 500))('%s: the same PUT retried succeeds', async (_, c) => {
    const t = testApp();
    const b = randomBlob(30);
    const location = await startUpload(t);
    for (const [from, to] of c.before) expect((await patch(t, location, b.bytes.subarray(from, to))).status).toBe(202);
    const body = c.put.body && b.bytes.subarray(...c.put.body);
    c.fault!(t);
    expect((await finish(t, location, b.digest, body, c.put.headers)).status).toBe(500);
    await expectCreated(t, await finish(t, location, b.digest, body, c.put.headers), 'repo', b);
  });
});

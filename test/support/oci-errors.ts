import { afterEach, expect } from 'vitest';
import { testApp } from './app.js';

/**
 * Assertions for the OCI error body (spec.md#error-codes):
 *   {"errors":[{"code":"...","message":"...","detail":...}]}
 * and a guard that fails a test file when any request it made was answered 500.
 */

export interface OciErrorEntry {
  code: string;
  message: string;
  detail: unknown;
}

export interface ErrorExpectation {
  status: number;
  code: string;
  /** A pattern or substring the message must contain. */
  message?: RegExp | string;
  /** HEAD responses carry no body: only status and headers are checked. */
  head?: boolean;
}

/** Asserts `res` is an OCI error with `status` and `code`; returns its first entry (undefined for HEAD). */
export async function expectOciError(res: Response, expected: ErrorExpectation): Promise<OciErrorEntry | undefined> {
  const text = expected.head ? '' : await res.text();
  expect(res.status, `never 500; body: ${text}`).not.toBe(500);
  expect(res.status, `status; body: ${text}`).toBe(expected.status);
  expect(res.headers.get('content-type') ?? '').toMatch(/^application\/json\b/);
  if (expected.head) return undefined;
  expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(text)));
  const body = JSON.parse(text) as { errors?: unknown };
  expect(Object.keys(body)).toEqual(['errors']);
  expect(Array.isArray(body.errors)).toBe(true);
  const errors = body.errors as OciErrorEntry[];
  expect(errors.length).toBeGreaterThan(0);
  for (const e of errors) {
    expect(Object.keys(e).sort()).toEqual(['code', 'detail', 'message']);
    expect(typeof e.code).toBe('string');
    expect(typeof e.message).toBe('string');
    expect(e.message.length).toBeGreaterThan(0);
  }
  const first = errors[0]!;
  expect(first.code).toBe(expected.code);
  if (typeof expected.message === 'string') expect(first.message).toContain(expected.message);
  else if (expected.message) expect(first.message).toMatch(expected.message);
  return first;
}

/**
 * testApp() whose `request` records every response; the calling test file fails any test
 * after which a 500 was seen. Call at the top level of a test file (it registers afterEach).
 */
export function guardedApp(...args: Parameters<typeof testApp>): ReturnType<typeof testApp> {
  const t = testApp(...args);
  // Wrapped on the app itself, so the push helpers of testApp() are guarded too.
  const inner = t.app.request.bind(t.app);
  t.app.request = (async (...call: Parameters<typeof inner>) => {
    const res = await inner(...call);
    if (res.status >= 500) serverErrors.push(`${call[1]?.method ?? 'GET'} ${String(call[0])} -> ${res.status}`);
    return res;
  }) as typeof t.app.request;
  return t;
}

const serverErrors: string[] = [];

/** Registers an afterEach that fails the test when a guardedApp() answered any request with 5xx. */
export function failOnServerErrors(): void {
  afterEach(() => {
    const seen = serverErrors.splice(0);
    expect(seen, 'requests answered with a server error').toEqual([]);
  });
}

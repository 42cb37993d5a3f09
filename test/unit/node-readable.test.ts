import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { isNodeReadable, QUEUE_BYTES, webStreamOf } from '../../src/adapters/node-readable.js';

/** A Readable the test pushes into by hand, recording pause, resume and destroy. */
function source() {
  const events: string[] = [];
  const r = new Readable({ read() {} });
  const pause = r.pause.bind(r);
  const resume = r.resume.bind(r);
  r.pause = () => (events.push('pause'), pause());
  r.resume = () => (events.push('resume'), resume());
  r.on('close', () => events.push('close'));
  return { r, events };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('webStreamOf', () => {
  it('hands on the chunks the source emits, the same objects, and ends when it ends', async () => {
    const { r } = source();
    const { stream } = webStreamOf(r);
    const sent = [Buffer.alloc(10, 1), Buffer.alloc(20, 2)];
    for (const chunk of sent) r.push(chunk);
    r.push(null);
    const got: Uint8Array[] = [];
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) got.push(chunk);
    expect(got).toHaveLength(2);
    expect(got[0]).toBe(sent[0]);
    expect(got[1]).toBe(sent[1]);
  });

  it('pauses the source once its queue is full, and resumes it when the reader pulls', async () => {
    const { r, events } = source();
    const { stream } = webStreamOf(r);
    const chunk = 64 * 1024;
    for (let i = 0; i < QUEUE_BYTES / chunk + 2; i++) r.push(Buffer.alloc(chunk));
    await tick();
    expect(events).toContain('pause');
    const reader = stream.getReader();
    await reader.read();
    expect(events.at(-1)).toBe('resume');
    await reader.cancel();
  });

  it('errors the stream when the source fails or closes before its end, never ending it cleanly', async () => {
    const failing = source();
    const a = webStreamOf(failing.r).stream.getReader();
    failing.r.push(Buffer.alloc(5));
    await a.read();
    failing.r.destroy(new Error('connection reset'));
    await expect(a.read()).rejects.toThrow('terminated');

    const closing = source();
    const b = webStreamOf(closing.r).stream.getReader();
    closing.r.destroy();
    await expect(b.read()).rejects.toMatchObject({ cause: { message: 'the connection closed before the body ended' } });
  });

  it('destroys the source on cancel (or does what the caller asks), and settles once', async () => {
    const { r, events } = source();
    let settled = 0;
    const { stream } = webStreamOf(r, { settle: () => settled++ });
    r.push(Buffer.alloc(5));
    await stream.cancel();
    await tick();
    expect(events).toContain('close');
    expect(r.destroyed).toBe(true);
    expect(settled).toBe(1);

    const kept = source();
    let cancelled = false;
    const other = webStreamOf(kept.r, { cancel: () => (cancelled = true) });
    await other.stream.cancel();
    expect(cancelled).toBe(true);
    expect(kept.r.destroyed).toBe(false);
  });

  it('reads off a message received whole when cancelled, so its connection is kept', async () => {
    const { r, events } = source();
    Object.defineProperty(r, 'complete', { value: true });
    const { stream } = webStreamOf(r);
    r.push(Buffer.alloc(5));
    await stream.cancel();
    expect(r.destroyed).toBe(false);
    expect(events.at(-1)).toBe('resume');
  });

  it('errors at once for a source destroyed before it was handed over', async () => {
    const { r } = source();
    r.destroy();
    await tick();
    await expect(webStreamOf(r).stream.getReader().read()).rejects.toMatchObject({ cause: { message: 'the connection closed before the body ended' } });
  });

  it('is failed from outside by `fail`', async () => {
    const { r } = source();
    const { stream, fail } = webStreamOf(r);
    fail(new Error('aborted by the caller'));
    await expect(stream.getReader().read()).rejects.toThrow('aborted by the caller');
  });
});

describe('isNodeReadable', () => {
  it('tells a Node Readable from a web stream', () => {
    expect(isNodeReadable(new Readable())).toBe(true);
    expect(isNodeReadable(new ReadableStream())).toBe(false);
    expect(isNodeReadable(undefined)).toBe(false);
  });
});

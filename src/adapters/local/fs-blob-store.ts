import { randomUUID } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import type { BlobStore, ByteStream, ObjectBody, ObjectInfo, ObjectRange } from '../../ports/blob-store.js';

/**
 * BlobStore on a local directory. Writes go to a private temporary file and are renamed into
 * place after the body has ended cleanly, so readers (in this process or another one sharing
 * the directory) never see a partial object. Reads open the file first and stream from the
 * open descriptor, so a concurrent delete or replace cannot tear a response.
 */
export class FsBlobStore implements BlobStore {
  private readonly tmp: string;

  constructor(private readonly root: string) {
    this.tmp = join(root, '.tmp');
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(this.path(key));
      // A directory here only holds other keys (keys are flat): no object at this key.
      return s.isFile() ? { size: s.size } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async get(key: string, range?: ObjectRange): Promise<ObjectBody | undefined> {
    let file;
    try {
      file = await open(this.path(key), 'r');
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    const info = await file.stat();
    if (!info.isFile()) {
      await file.close();
      return undefined;
    }
    const size = info.size;
    if (range && range.length === 0) {
      await file.close();
      return { body: new ReadableStream({ start: (c) => c.close() }), size };
    }
    const stream = file.createReadStream({
      start: range?.offset ?? 0,
      end: range ? range.offset + range.length - 1 : undefined,
      highWaterMark: 256 * 1024,
    });
    return { body: Readable.toWeb(stream) as unknown as ByteStream, size };
  }

  async put(key: string, body: ByteStream, size?: number): Promise<ObjectInfo> {
    await mkdir(this.tmp, { recursive: true });
    const temp = join(this.tmp, randomUUID());
    const file = await open(temp, 'wx');
    let written = 0;
    try {
      const reader = body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          await file.write(value);
          written += value.byteLength;
        }
      } catch (err) {
        await reader.cancel(err).catch(() => undefined);
        throw err;
      }
      if (size !== undefined && written !== size) throw new Error(`short write: ${written} of ${size} bytes`);
      await file.sync();
      await file.close();
      const target = this.path(key);
      await mkdir(dirname(target), { recursive: true });
      await rename(temp, target);
      return { size: written };
    } catch (err) {
      await file.close().catch(() => undefined);
      await rm(temp, { force: true });
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await rm(this.path(key), { force: true });
    } catch (err) {
      // A directory only holds other keys: there is no object to remove.
      if ((err as NodeJS.ErrnoException)?.code !== 'ERR_FS_EISDIR') throw err;
    }
  }

  async move(from: string, to: string): Promise<void> {
    const target = this.path(to);
    await mkdir(dirname(target), { recursive: true });
    await rename(this.path(from), target);
  }

  private path(key: string): string {
    // Keys are chosen by core (digests, upload ids); refuse anything that could escape root.
    if (!/^[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/.test(key) || key.split('/').some((p) => p === '.' || p === '..')) {
      throw new Error(`invalid object key ${JSON.stringify(key)}`);
    }
    return join(this.root, key);
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}

import { accessSync, constants, mkdirSync, statSync } from 'node:fs';

/**
 * Start-up failures an operator causes and can fix (a busy port, an address this machine does
 * not have, a data directory that is not one or cannot be written, an index that cannot be
 * opened): one line, `outpost: <message>`, and exit status 2, like a configuration error. Only
 * errors with a system or SQLite error code become one; anything else is a bug and keeps its
 * stack trace.
 */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

type CodedError = Error & { code?: unknown; syscall?: unknown };

function codeOf(err: unknown): string | undefined {
  const code = err instanceof Error ? (err as CodedError).code : undefined;
  return typeof code === 'string' ? code : undefined;
}

const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: 'the port is already in use (another Outpost, or another server?)',
  EADDRNOTAVAIL: 'this machine has no such address',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EPERM: 'permission denied',
  ENOTFOUND: 'no such host name',
  EAI_AGAIN: 'the host name could not be resolved (temporary DNS failure)',
  EAFNOSUPPORT: 'this machine does not support that address family',
};

/** A server's `error` event during listen, as one line; undefined for an error without a code. */
export function listenError(err: unknown, host: string, port: number): StartupError | undefined {
  const code = codeOf(err);
  if (code === undefined) return undefined;
  const where = host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
  const reason = LISTEN_REASONS[code] ?? (err as Error).message.slice(0, 160);
  return new StartupError(`cannot listen on ${where} (OUTPOST_HOST, OUTPOST_PORT): ${reason} (${code})`);
}

const PATH_REASONS: Record<string, string> = {
  ENOTDIR: 'a part of the path is a file, not a directory',
  EEXIST: 'it exists and is not a directory',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'the file system is read-only',
  ENOSPC: 'no space left on the device',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'the path is too long',
};

/**
 * Makes the data directory if needed and checks that it is a directory Outpost may write;
 * throws a StartupError naming it otherwise. Root passes permission checks, so a read-only
 * file system (EROFS) is the check's other catch.
 */
export function prepareDataDir(dataDir: string): void {
  const fail = (code: string, message?: string) =>
    new StartupError(`cannot use the data directory "${dataDir.slice(0, 200)}" (OUTPOST_DATA_DIR): ${PATH_REASONS[code] ?? message ?? code} (${code})`);
  try {
    mkdirSync(dataDir, { recursive: true });
    if (!statSync(dataDir).isDirectory()) throw fail('EEXIST');
    accessSync(dataDir, constants.W_OK | constants.X_OK);
  } catch (err) {
    if (err instanceof StartupError) throw err;
    const code = codeOf(err);
    if (code === undefined) throw err;
    throw fail(code, (err as Error).message.slice(0, 160));
  }
}

/** Opens the index with `open`, turning a file or SQLite failure into a StartupError naming the file. */
export function openIndex<T>(file: string, open: () => T): T {
  try {
    return open();
  } catch (err) {
    const code = codeOf(err);
    if (code === undefined || !(code.startsWith('SQLITE_') || code.startsWith('E'))) throw err;
    throw new StartupError(`cannot open the index "${file.slice(0, 200)}": ${(err as Error).message.slice(0, 160)} (${code})`);
  }
}

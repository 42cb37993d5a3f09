#!/usr/bin/env -S node --initial-old-space-size=128
/**
 * The `outpost` command (package.json "bin"; `npm start` runs `outpost serve`):
 *
 *   outpost serve            serve the OCI Distribution API, configured by OUTPOST_* variables
 *   outpost gc [--dry-run] [--grace DURATION]
 *                            one garbage-collection run on the same store (servers may be running)
 *   outpost hash-password [--iterations N]
 *                            read a password on stdin, print its hash (cli-auth.ts)
 *   outpost token-key [--alg ES256|EdDSA]
 *                            print a new token signing key
 *   outpost help | --help    usage
 *   outpost --version
 *
 * The first line gives node --initial-old-space-size=128 (`npm start` passes the same; a test
 * keeps the two equal). Outpost's live heap is small (about 15 MB), and V8 sizes the old
 * generation's limit from it: a fill streaming at 200 MiB/s then kept a full collection running
 * every few MiB (about 100 per GiB), and a cold fill spent 1.6 s of CPU on 256 MiB; with the
 * limit at 128 MB it spends about 1.0 s and collects about 20 times per GiB, for about 40 MiB more
 * resident memory at peak (README, Benchmarks: bench:fill with --trace-gc). Started as `node dist/entry/cli.js`, it works
 * the same, only slower on cold fills.
 *
 * Exit status of gc: 0 when the run finished (whatever it deleted), 1 when some candidates
 * failed (a store or index error; they stay listed for the next run), 2 as below.
 *
 * Exit status of serve: 0 after a stop on SIGTERM or SIGINT (also when the shutdown deadline cut
 * requests: the stop was asked for and done; a line on stderr counts what was cut); 2 for a
 * usage, configuration or start-up error (one `outpost: ...` line, no stack); 128 + the
 * signal's number when a second signal ends the wait for requests in flight.
 *
 * Shutdown protocol, on the first SIGTERM or SIGINT:
 *   stop listening (new connections are refused)
 *   requests in flight go on; each answer says Connection: close; idle connections are closed
 *   after OUTPOST_SHUTDOWN_SECONDS, connections still open are destroyed
 *   close the index (SQLite checkpoints its WAL), exit 0
 * A further signal exits at once; a copy that arrives within SIGNAL_ECHO_MS of the first is not
 * counted (Ctrl-C under `npm start` reaches Outpost twice: from the terminal and from npm).
 */
import { readFileSync, realpathSync, writeSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { hashPasswordCommand, option, readStdinSecret, tokenKeyCommand, type CredentialIo } from './cli-auth.js';
import { ConfigError, type Config } from './config.js';
import { createLog } from './log.js';
import { DEFAULT_RECLAIM_AGE_MS } from '../ports/blob-store.js';
import { duration, formatDuration, Problems } from './config/values.js';
import { openAdapters, readNodeConfig, startNode, type OpenedAdapters } from './node.js';
import { outpostApp } from './outpost.js';
import { StartupError } from './startup-errors.js';
import { gcOptions } from './upkeep.js';

export interface Io {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
  /** Reads a secret (hash-password): stdin by default. */
  readSecret?: (prompt: string) => Promise<string>;
}

function credentialIo(io: Io): CredentialIo {
  return { out: io.out, err: io.err, readSecret: io.readSecret ?? readStdinSecret };
}

interface Command {
  summary: string;
  run(args: string[], io: Io): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  serve: { summary: 'serve the OCI Distribution API (settings: OUTPOST_* environment variables)', run: serve },
  gc: { summary: 'delete content nothing references, and leftovers of crashes (--dry-run: only say what)', run: gc },
  'hash-password': { summary: 'read a password on stdin, print its hash for auth.users[].passwordHash', run: (args, io) => hashPasswordCommand(args, credentialIo(io)) },
  'token-key': { summary: 'print a new private key (PEM) for auth.tokenKeys', run: (args, io) => tokenKeyCommand(args, credentialIo(io)) },
};

const GC_USAGE = `usage: outpost gc [--dry-run] [--grace DURATION]

One garbage-collection run on the store the OUTPOST_* settings name, beside any servers on it:
evicts mirrored content by gc.mirror (maximum age, size budget) and applies the gc.hosted
policies (none unless configured), deletes
blobs and manifests that nothing has referenced for the grace period (gc.grace in the
configuration document, default 1d), then what crashed writes and abandoned uploads left.
  --dry-run          delete nothing; print what a run now would delete
  --grace DURATION   this run's grace period instead, like 0s, 30m, 24h (0s: all garbage now)
Prints one line per item evicted and per object deleted (or that would be), then the totals.
`;

const SIGNAL_ECHO_MS = 500;

export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length)) + 2;
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`);
  return [
    'usage: outpost <command>',
    '',
    'commands:',
    ...lines,
    `  ${'help'.padEnd(width)}print this help (also --help, -h)`,
    '',
    'options: --version',
    'Settings are environment variables; see "Configuration reference" in README.md.',
    '',
  ].join('\n');
}

/** Runs one command line; resolves with the process's exit status. */
export async function runCli(argv: string[], io: Io): Promise<number> {
  const [name, ...args] = argv;
  if (name === 'help' || name === '--help' || name === '-h') {
    io.out(usage());
    return 0;
  }
  if (name === '--version') {
    io.out(`outpost ${version()}\n`);
    return 0;
  }
  const command = name === undefined ? undefined : COMMANDS[name];
  if (!command) {
    io.err(`${name === undefined ? 'outpost: no command given' : `outpost: unknown command "${name.slice(0, 80)}"`}\n\n${usage()}`);
    return 2;
  }
  return command.run(args, io);
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function serve(args: string[], io: Io): Promise<number> {
  if (args[0] === '--help' || args[0] === '-h') {
    io.out(`usage: outpost serve\n\n${COMMANDS.serve!.summary}.\n`);
    return 0;
  }
  if (args.length > 0) {
    io.err(`outpost serve: takes no arguments (settings are OUTPOST_* environment variables), got "${args[0]!.slice(0, 80)}"\n\n${usage()}`);
    return 2;
  }
  const config = loadConfig(io);
  if (!config) return 2;
  const log = createLog(config.logLevel, (line) => io.out(`${line}\n`));
  let server: Awaited<ReturnType<typeof startNode>>;
  try {
    server = await startNode(config, log);
  } catch (err) {
    if (!(err instanceof StartupError)) throw err;
    io.err(`outpost: ${err.message}\n`);
    return 2;
  }
  const host = config.host.includes(':') && !config.host.startsWith('[') ? `[${config.host}]` : config.host;
  io.out(`outpost: serving the OCI Distribution API on http://${host}:${server.port}/v2/ (${server.where})\n`);

  const signal = await new Promise<NodeJS.Signals>((resolveSignal) => {
    let first: number | undefined;
    const onSignal = (sig: NodeJS.Signals) => {
      if (first === undefined) {
        first = Date.now();
        resolveSignal(sig);
      } else if (Date.now() - first >= SIGNAL_ECHO_MS) {
        io.err(`outpost: ${sig} again: exiting now, ${server.inFlight()} request(s) still in flight\n`);
        process.exit(128 + constants.signals[sig]);
      }
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  const seconds = config.shutdownSeconds;
  io.out(`outpost: ${signal}: stopping; ${server.inFlight()} request(s) in flight, waiting up to ${seconds} s for them\n`);
  const { cut } = await server.stop(seconds * 1000);
  if (cut > 0) io.err(`outpost: the shutdown deadline (${seconds} s, OUTPOST_SHUTDOWN_SECONDS) passed: cut ${cut} request(s) in flight\n`);
  io.out('outpost: stopped\n');
  return 0;
}

async function gc(args: string[], io: Io): Promise<number> {
  let dryRun = false;
  let grace: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--help' || arg === '-h') {
      io.out(GC_USAGE);
      return 0;
    }
    const found = option(args, i, '--grace');
    if (arg === '--dry-run') dryRun = true;
    else if (found) {
      i = found.last;
      grace = found.value;
      if (grace === undefined) return usageError(io, 'gc', '--grace needs a duration, like 0s, 30m, 24h');
    } else return usageError(io, 'gc', `unknown argument "${arg.slice(0, 80)}"`);
  }
  const config = loadConfig(io);
  if (!config) return 2;
  let graceMs = config.gc.graceMs;
  if (grace !== undefined) {
    const problems = new Problems('--grace');
    graceMs = duration(grace, '', problems, { min: 0, max: Number.MAX_SAFE_INTEGER, fallback: 0 });
    if (problems.list.length > 0) return usageError(io, 'gc', `--grace must be a duration like 0s, 30m, 24h, got "${grace.slice(0, 80)}"`);
  }
  let adapters: OpenedAdapters;
  try {
    adapters = openAdapters(config);
  } catch (err) {
    if (!(err instanceof StartupError)) throw err;
    io.err(`outpost: ${err.message}\n`);
    return 2;
  }
  try {
    const { registry } = outpostApp(config, adapters);
    const verb = dryRun ? 'would delete' : 'deleted';
    const report = await registry.gc({
      ...gcOptions(config.gc),
      graceMs,
      dryRun,
      onEvict: (item, reason) => io.out(`${dryRun ? 'would evict' : 'evicted'} ${item.name}@${item.digest} (${item.kind}, ${item.size} bytes, ${reason})\n`),
      onHostedEvict: (e) => io.out(`${dryRun ? 'would delete' : 'deleted'} ${e.reason === 'keepTags' ? `tag ${e.name}:${e.what}` : `manifest ${e.name}@${e.what}`} (${e.reason})\n`),
      onDelete: (digest, size) => io.out(`${verb} ${digest} (${size} bytes)\n`),
    });
    if (report.retention) {
      const r = report.retention;
      io.out(
        `outpost gc: mirror retention: ${r.items} cached items, ${r.cachedBytes} bytes; ${dryRun ? 'would evict' : 'evicted'} ` +
          `${r.evicted.age} by age and ${r.evicted.budget} by size budget, ${r.evictedBytes} bytes\n`,
      );
    }
    if (report.hosted) {
      const h = report.hosted;
      io.out(`outpost gc: hosted retention: ${h.repositories} repositories; ${verb} ${h.tagsDeleted} tags and ${h.manifestsDeleted} untagged manifests\n`);
    }
    if (report.backfill) {
      const b = report.backfill;
      io.out(`outpost gc: first run on this store: made the references of ${b.links} links and ${b.manifests} manifests, noted ${b.objects} stored objects\n`);
    }
    const kept = Object.entries(report.outcomes)
      .filter(([outcome]) => outcome !== 'deleted')
      .map(([outcome, n]) => `${n} ${outcome}`)
      .join(', ');
    io.out(
      `outpost gc: ${report.examined} candidates (grace ${formatDuration(graceMs)}); ${verb} ${report.deleted} objects, ${report.deletedBytes} bytes` +
        `${kept ? `; kept ${kept}` : ''}${report.failed ? `; ${report.failed} failed` : ''}\n`,
    );
    if (!dryRun) {
      const leftovers = await registry.reclaim({ olderThanMs: DEFAULT_RECLAIM_AGE_MS });
      io.out(
        `outpost gc: leftovers: ${leftovers.uploads.deleted} upload parts, ${leftovers.fills.deleted} fill parts, ` +
          `${leftovers.store?.temporary ?? 0} temporaries, ${leftovers.indexItems ?? 0} index items\n`,
      );
    }
    if (report.failed > 0) {
      io.err(`outpost gc: ${report.failed} candidates failed (store or index errors); they stay listed for the next run\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    io.err(`outpost gc: failed: ${String((err as Error)?.message ?? err).slice(0, 300)}\n`);
    return 1;
  } finally {
    adapters.close();
  }
}

/** The configuration the environment names; a mistake is one `outpost: ...` line on stderr and undefined (status 2). */
function loadConfig(io: Io): Config | undefined {
  try {
    return readNodeConfig(io.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.err(`outpost: ${err.message}\n`);
    return undefined;
  }
}

function usageError(io: Io, command: string, message: string): number {
  io.err(`outpost ${command}: ${message}\n\n${command === 'gc' ? GC_USAGE : usage()}`);
  return 2;
}

/**
 * stdout, with what one turn of the event loop writes gathered into one write(2): a busy
 * server then makes one system call for many access lines, not one per request. Written at
 * once past FLUSH_BYTES, and on exit; a SIGKILL loses at most one turn's lines.
 */
const FLUSH_BYTES = 64 * 1024;

function bufferedStdout(): (text: string) => void {
  let pending = '';
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending === '') return;
    const text = pending;
    pending = '';
    process.stdout.write(text);
  };
  process.once('exit', () => {
    if (pending === '') return;
    try {
      writeSync(1, pending);
    } catch {
      // stdout is gone; nothing to do.
    }
  });
  return (text) => {
    pending += text;
    if (pending.length >= FLUSH_BYTES) flush();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
}

async function main(): Promise<void> {
  // A log reader that went away (EPIPE) must not take the server down with it.
  process.stdout.on('error', () => undefined);
  process.stderr.on('error', () => undefined);
  const status = await runCli(process.argv.slice(2), {
    out: bufferedStdout(),
    err: (text) => void process.stderr.write(text),
    env: process.env,
  });
  process.exit(status);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolveArgv(process.argv[1])) void main();

/** The script path node was given, through the symlink npm puts in node_modules/.bin or a global prefix. */
function resolveArgv(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/**
 * The credential commands of `outpost`:
 *
 *   outpost hash-password [--iterations N]   reads a password on stdin (not echoed on a
 *                                            terminal), prints its passwordHash
 *   outpost token-key [--alg ES256|EdDSA]    prints a new PKCS#8 private key (PEM) for auth.tokenKeys
 *
 * Both write only to stdout what belongs in a secret or the document, and never log it.
 */
import { DEFAULT_ITERATIONS, formatPasswordHash, hashPassword, MAX_PASSWORD_BYTES, MIN_ITERATIONS, NODE_MAX_ITERATIONS, WORKERS_MAX_ITERATIONS } from '../core/auth/passwords.js';
import { generateTokenKey } from '../core/auth/tokens.js';

export interface CredentialIo {
  out(text: string): void;
  err(text: string): void;
  /** The password: stdin's first line (a terminal: typed without echo). */
  readSecret(prompt: string): Promise<string>;
}

export const HASH_PASSWORD_USAGE = `usage: outpost hash-password [--iterations N]

Reads a password on standard input (typed without echo on a terminal, or piped: the first
line) and prints its hash for auth.users[].passwordHash: PBKDF2-SHA-256 with a random salt,
${DEFAULT_ITERATIONS} iterations by default (the most Cloudflare Workers accepts). On Node up to
${NODE_MAX_ITERATIONS} may be asked for (OWASP suggests 600000); a Worker refuses a hash above ${WORKERS_MAX_ITERATIONS}.
`;

export const TOKEN_KEY_USAGE = `usage: outpost token-key [--alg ES256|EdDSA]

Prints a new private key (PKCS#8 PEM) to sign tokens with: put it in a variable or secret and
name that in auth.tokenKeys[].privateKeyEnv. ES256 (P-256) by default; EdDSA is Ed25519.
`;

export async function hashPasswordCommand(args: string[], io: CredentialIo): Promise<number> {
  let iterations = DEFAULT_ITERATIONS;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--help' || arg === '-h') {
      io.out(HASH_PASSWORD_USAGE);
      return 0;
    }
    const found = option(args, i, '--iterations');
    if (!found) return usage(io, 'hash-password', `unknown argument "${arg.slice(0, 80)}"`, HASH_PASSWORD_USAGE);
    i = found.last;
    const value = found.value ?? '';
    if (!/^\d{1,9}$/.test(value) || Number(value) < MIN_ITERATIONS || Number(value) > NODE_MAX_ITERATIONS) {
      return usage(io, 'hash-password', `--iterations must be an integer from ${MIN_ITERATIONS} to ${NODE_MAX_ITERATIONS}`, HASH_PASSWORD_USAGE);
    }
    iterations = Number(value);
  }
  const password = await io.readSecret('password: ');
  if (password === '') {
    io.err('outpost hash-password: the password is empty\n');
    return 2;
  }
  if (password.includes('\0')) {
    io.err('outpost hash-password: the password holds a NUL character, which no login can send\n');
    return 2;
  }
  if (new TextEncoder().encode(password).byteLength > MAX_PASSWORD_BYTES) {
    io.err(`outpost hash-password: the password is longer than ${MAX_PASSWORD_BYTES} bytes\n`);
    return 2;
  }
  io.out(`${formatPasswordHash(await hashPassword(password, iterations))}\n`);
  return 0;
}

export async function tokenKeyCommand(args: string[], io: CredentialIo): Promise<number> {
  let alg: 'ES256' | 'EdDSA' = 'ES256';
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--help' || arg === '-h') {
      io.out(TOKEN_KEY_USAGE);
      return 0;
    }
    const found = option(args, i, '--alg');
    if (!found) return usage(io, 'token-key', `unknown argument "${arg.slice(0, 80)}"`, TOKEN_KEY_USAGE);
    i = found.last;
    if (found.value !== 'ES256' && found.value !== 'EdDSA') return usage(io, 'token-key', '--alg must be ES256 or EdDSA', TOKEN_KEY_USAGE);
    alg = found.value;
  }
  io.out((await generateTokenKey(alg)).privateKeyPem.trimEnd() + '\n');
  return 0;
}

/**
 * `--name value` or `--name=value` at args[i]: its value (undefined when the value is missing)
 * and the index of the last argument it took; undefined when args[i] is another argument.
 */
export function option(args: string[], i: number, name: string): { value: string | undefined; last: number } | undefined {
  const arg = args[i]!;
  if (arg === name) return { value: args[i + 1], last: i + 1 };
  if (arg.startsWith(`${name}=`)) return { value: arg.slice(name.length + 1), last: i };
  return undefined;
}

function usage(io: CredentialIo, command: string, message: string, text: string): number {
  io.err(`outpost ${command}: ${message}\n\n${text}`);
  return 2;
}

/** stdin's first line; on a terminal, read in raw mode so that nothing typed is echoed. */
export function readStdinSecret(prompt: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    let text = '';
    const raw = stdin.isTTY === true;
    if (raw) {
      process.stderr.write(prompt);
      stdin.setRawMode(true);
    }
    stdin.setEncoding('utf8');
    const done = (value: string) => {
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.off('error', reject);
      if (raw) {
        stdin.setRawMode(false);
        process.stderr.write('\n');
      }
      stdin.pause();
      resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\u0003' && raw) {
          stdin.setRawMode(false);
          process.exit(130);
        }
        if (ch === '\n' || ch === '\r' || ch === '\u0004') return done(text);
        if (raw && (ch === '\u007f' || ch === '\b')) text = text.slice(0, -1);
        else text += ch;
        if (text.length > 64 * 1024) return done(text);
      }
    };
    const onEnd = () => done(text);
    stdin.on('data', onData);
    stdin.on('end', onEnd);
    stdin.on('error', reject);
    stdin.resume();
  });
}

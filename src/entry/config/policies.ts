/**
 * The `policies:` section of the configuration document: which repositories serve only signed
 * images, and signed by whom (src/core/gate/gate.ts enforces them). Keys are PEM public keys,
 * inline (`pem:`) or in a file (`file:`, read at start-up on Node, relative to the document's
 * directory; Workers have no files, so there keys are inline). Keyless identities are refused
 * for now: this version verifies key-based signatures only, and a policy that could never be
 * met would deny everything it names.
 */
import type { GateMode, GatePolicy } from '../../core/gate/gate.js';
import { KeyError, parsePublicKeyPem } from '../../core/gate/keys.js';
import { TrustedRootError, trustedLogKeys } from '../../core/gate/trusted-root.js';
import { boolean, child, describe, duration, field, globs, item, list, mapping, quote, string, type SectionContext } from './values.js';

const POLICY_KEYS = ['name', 'repositories', 'mode', 'keys', 'keyless', 'trustedRoot', 'requireTransparencyLog', 'children', 'verdictTtl'] as const;
const KEY_KEYS = ['file', 'pem'] as const;
const MODES: readonly GateMode[] = ['enforce', 'warn', 'off'];
const POLICY_NAME = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const PUBLIC_GOOD = 'sigstore-public-good';

const DEFAULT_VERDICT_TTL_MS = 5 * 60_000;
const MIN_VERDICT_TTL_MS = 1000;
const MAX_VERDICT_TTL_MS = 24 * 60 * 60_000;
const MAX_KEYS = 64;

export function readPolicies(value: unknown, path: string, ctx: SectionContext): GatePolicy[] {
  const policies: GatePolicy[] = [];
  const names = new Set<string>();
  list(value, path, ctx.problems).forEach((entry, i) => {
    const at = item(path, i);
    const entries = mapping(entry, at, ctx.problems, {
      known: POLICY_KEYS,
      refused: {},
    });
    if (!entries) return;
    const name = string(field(entries, 'name'), child(at, 'name'), ctx.problems);
    if (name === undefined) ctx.problems.at(child(at, 'name'), 'is required: it names the policy in refusals, logs and metrics');
    else if (!POLICY_NAME.test(name) || name.length > 64) ctx.problems.at(child(at, 'name'), `must be lower-case letters and digits separated by ".", "_" or "-" (at most 64), got ${quote(name)}`);
    else if (names.has(name)) ctx.problems.at(child(at, 'name'), `${quote(name)} names another policy too`);
    else names.add(name);
    if (field(entries, 'repositories') === undefined) ctx.problems.at(child(at, 'repositories'), 'is required: the repository globs the policy gates');
    const repositories = globs(field(entries, 'repositories'), child(at, 'repositories'), ctx.problems);
    const rawMode = field(entries, 'mode') ?? 'enforce';
    const mode = MODES.find((m) => m === rawMode);
    if (!mode) ctx.problems.at(child(at, 'mode'), `must be one of ${MODES.join(', ')}, got ${describe(rawMode)}`);
    if (field(entries, 'keyless') !== undefined) {
      ctx.problems.at(
        child(at, 'keyless'),
        'keyless identities (Fulcio certificates) are not supported by this version of Outpost yet: the policy could never be met; use keys',
      );
    }
    const keys = readKeys(field(entries, 'keys'), child(at, 'keys'), ctx);
    if (field(entries, 'keys') === undefined) ctx.problems.at(child(at, 'keys'), 'is required: the public keys whose signatures satisfy the policy');
    const requireTransparencyLog = boolean(field(entries, 'requireTransparencyLog'), child(at, 'requireTransparencyLog'), ctx.problems, true);
    const trustedRoot = readTrustedRoot(field(entries, 'trustedRoot'), child(at, 'trustedRoot'), ctx);
    const children = boolean(field(entries, 'children'), child(at, 'children'), ctx.problems, true);
    const verdictTtlMs = duration(field(entries, 'verdictTtl'), child(at, 'verdictTtl'), ctx.problems, {
      min: MIN_VERDICT_TTL_MS,
      max: MAX_VERDICT_TTL_MS,
      fallback: DEFAULT_VERDICT_TTL_MS,
    });
    const policy: GatePolicy = { name: name ?? '', repositories, mode: mode ?? 'enforce', keys, requireTransparencyLog, children, verdictTtlMs };
    // The transparency log is checked when required, or when a root is named (a bundle present must then verify).
    if (requireTransparencyLog || field(entries, 'trustedRoot') !== undefined) policy.trustedRoot = trustedRoot;
    policies.push(policy);
  });
  return policies;
}

function readKeys(value: unknown, path: string, ctx: SectionContext): GatePolicy['keys'] {
  const keys: GatePolicy['keys'] = [];
  const entries = list(value, path, ctx.problems);
  if (entries.length > MAX_KEYS) ctx.problems.at(path, `holds at most ${MAX_KEYS} keys, got ${entries.length}`);
  entries.slice(0, MAX_KEYS).forEach((entry, i) => {
    const at = item(path, i);
    const e = mapping(entry, at, ctx.problems, { known: KEY_KEYS });
    if (!e) return;
    const file = field(e, 'file');
    const inline = field(e, 'pem');
    if ((file === undefined) === (inline === undefined)) {
      ctx.problems.at(at, 'needs exactly one of file (a PEM file) and pem (the key inline)');
      return;
    }
    let pem: string | undefined;
    let label: string;
    if (file !== undefined) {
      const name = string(file, child(at, 'file'), ctx.problems);
      if (name === undefined) return;
      pem = readFileFor(name, child(at, 'file'), ctx);
      label = name;
    } else {
      pem = string(inline, child(at, 'pem'), ctx.problems);
      label = `keys[${i}]`;
    }
    if (pem === undefined) return;
    try {
      parsePublicKeyPem(pem);
    } catch (err) {
      ctx.problems.at(at, `is not a public key Outpost can verify with: ${err instanceof KeyError ? err.message : 'unreadable'}`);
      return;
    }
    keys.push({ label, pem });
  });
  return keys;
}

function readTrustedRoot(value: unknown, path: string, ctx: SectionContext): string | undefined {
  const name = value === undefined ? PUBLIC_GOOD : string(value, path, ctx.problems);
  if (name === undefined) return undefined;
  let text: string | undefined;
  if (name !== PUBLIC_GOOD) text = readFileFor(name, path, ctx);
  else if (ctx.publicGoodRoot) text = ctx.publicGoodRoot();
  else ctx.problems.at(path, `the shipped ${PUBLIC_GOOD} root is not available here; name a trusted_root.json file`);
  if (text === undefined) return undefined;
  try {
    trustedLogKeys(text);
  } catch (err) {
    ctx.problems.at(path, err instanceof TrustedRootError ? err.message : 'is not a trusted root');
    return undefined;
  }
  return text;
}

/** A file the document names, through the entry's reader (Node); on Workers there are none. */
function readFileFor(name: string, path: string, ctx: SectionContext): string | undefined {
  if (!ctx.readFile) {
    ctx.problems.at(path, `names the file ${quote(name)}, but ${ctx.runtime === 'workers' ? 'a Worker has no files: give the key inline with pem:' : 'no file can be read here'}`);
    return undefined;
  }
  const read = ctx.readFile(name);
  if (typeof read === 'string') return read;
  ctx.problems.at(path, read.error);
  return undefined;
}

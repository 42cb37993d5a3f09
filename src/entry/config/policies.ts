/**
 * The `policies:` section of the configuration document: which repositories serve only signed
 * images, and signed by whom (src/core/gate/gate.ts enforces them). Keys are PEM public keys,
 * inline (`pem:`) or in a file (`file:`, read at start-up on Node, relative to the document's
 * directory; Workers have no files, so there keys are inline). Keyless identities are an OIDC
 * issuer and the certificate's subject, exactly (`subject:`) or by an anchored regular
 * expression (`subjectPattern:`), as `cosign verify --certificate-identity[-regexp]
 * --certificate-oidc-issuer`; they are checked against the Fulcio CAs of the policy's trusted
 * root. A policy names keys, keyless identities or both.
 */
import { COSIGN_SIGN_PREDICATE, type KeylessIdentity } from '../../core/gate/bundles.js';
import type { GateMode, GatePolicy } from '../../core/gate/gate.js';
import { KeyError, parsePublicKeyPem } from '../../core/gate/keys.js';
import { TrustedRootError, readTrustedRootContents, type TrustedRootContents } from '../../core/gate/trusted-root.js';
import type { UpstreamConfig } from '../../core/mirror/config.js';
import { anchoredRegExp, boolean, child, describe, duration, field, item, list, mapping, qualifiedGlobs, quote, required, string, stringList, type SectionContext } from './values.js';

const POLICY_KEYS = ['name', 'repositories', 'mode', 'keys', 'keyless', 'trustedRoot', 'requireTransparencyLog', 'predicateTypes', 'children', 'verdictTtl'] as const;
const KEY_KEYS = ['file', 'pem'] as const;
const KEYLESS_KEYS = ['issuer', 'subject', 'subjectPattern'] as const;
const MODES: readonly GateMode[] = ['enforce', 'warn', 'off'];
const POLICY_NAME = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const PUBLIC_GOOD = 'sigstore-public-good';

const DEFAULT_VERDICT_TTL_MS = 5 * 60_000;
const MIN_VERDICT_TTL_MS = 1000;
const MAX_VERDICT_TTL_MS = 24 * 60 * 60_000;
const MAX_KEYS = 64;
const MAX_IDENTITIES = 64;

export function readPolicies(value: unknown, path: string, ctx: SectionContext, upstreams: readonly UpstreamConfig[] = []): GatePolicy[] {
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
    const repositories = qualifiedGlobs(field(entries, 'repositories'), child(at, 'repositories'), ctx.problems, upstreams);
    const rawMode = field(entries, 'mode') ?? 'enforce';
    const mode = MODES.find((m) => m === rawMode);
    if (!mode) ctx.problems.at(child(at, 'mode'), `must be one of ${MODES.join(', ')}, got ${describe(rawMode)}`);
    const keys = field(entries, 'keys') === undefined ? [] : readKeys(field(entries, 'keys'), child(at, 'keys'), ctx);
    const keyless = field(entries, 'keyless') === undefined ? [] : readKeyless(field(entries, 'keyless'), child(at, 'keyless'), ctx);
    const none = (v: unknown) => v === undefined || (Array.isArray(v) && v.length === 0);
    if (none(field(entries, 'keys')) && none(field(entries, 'keyless'))) {
      ctx.problems.at(child(at, 'keys'), 'is required unless keyless is given: the public keys or keyless identities whose signatures satisfy the policy');
    }
    const requireTransparencyLog = boolean(field(entries, 'requireTransparencyLog'), child(at, 'requireTransparencyLog'), ctx.problems, true);
    const root = readTrustedRoot(field(entries, 'trustedRoot'), child(at, 'trustedRoot'), ctx);
    const trustedRoot = root?.text;
    const children = boolean(field(entries, 'children'), child(at, 'children'), ctx.problems, true);
    const verdictTtlMs = duration(field(entries, 'verdictTtl'), child(at, 'verdictTtl'), ctx.problems, {
      min: MIN_VERDICT_TTL_MS,
      max: MAX_VERDICT_TTL_MS,
      fallback: DEFAULT_VERDICT_TTL_MS,
    });
    const policy: GatePolicy = { name: name ?? '', repositories, mode: mode ?? 'enforce', keys, keyless, requireTransparencyLog, children, verdictTtlMs };
    if (field(entries, 'predicateTypes') !== undefined) policy.predicateTypes = readPredicateTypes(field(entries, 'predicateTypes'), child(at, 'predicateTypes'), ctx);
    // The transparency log is checked when required, or when a root is named (a bundle present
    // must then verify); keyless identities always need the root's Fulcio CAs.
    if (requireTransparencyLog || keyless.length > 0 || field(entries, 'trustedRoot') !== undefined) policy.trustedRoot = trustedRoot;
    if (root && requireTransparencyLog && root.contents.logKeys.length === 0) {
      ctx.problems.at(child(at, 'trustedRoot'), 'lists no transparency log, and requireTransparencyLog is on: no signature could ever be proven logged');
    }
    if (root && keyless.length > 0 && root.contents.logKeys.length === 0 && !root.contents.timestampAuthorities) {
      ctx.problems.at(child(at, 'trustedRoot'), 'lists neither a transparency log nor a timestamp authority: no keyless signature could be given a signing time');
    }
    if (root && keyless.length > 0 && !root.contents.certificateAuthorities) {
      ctx.problems.at(child(at, 'trustedRoot'), 'lists no Fulcio certificate authority: the keyless identities could never be met');
    }
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

function readKeyless(value: unknown, path: string, ctx: SectionContext): KeylessIdentity[] {
  const identities: KeylessIdentity[] = [];
  const entries = list(value, path, ctx.problems);
  if (entries.length > MAX_IDENTITIES) ctx.problems.at(path, `holds at most ${MAX_IDENTITIES} identities, got ${entries.length}`);
  entries.slice(0, MAX_IDENTITIES).forEach((entry, i) => {
    const at = item(path, i);
    const e = mapping(entry, at, ctx.problems, { known: KEYLESS_KEYS });
    if (!e) return;
    const issuer = required(field(e, 'issuer'), child(at, 'issuer'), ctx.problems, 'the OIDC issuer of the certificate, e.g. https://token.actions.githubusercontent.com');
    const subject = field(e, 'subject');
    const pattern = field(e, 'subjectPattern');
    if ((subject === undefined) === (pattern === undefined)) {
      ctx.problems.at(at, 'needs exactly one of subject (the certificate identity, exactly) and subjectPattern (an anchored regular expression)');
      return;
    }
    if (subject !== undefined) {
      const s = string(subject, child(at, 'subject'), ctx.problems);
      if (issuer !== undefined && s !== undefined) identities.push({ issuer, subject: s });
    } else {
      const re = anchoredRegExp(pattern, child(at, 'subjectPattern'), ctx.problems);
      if (issuer !== undefined && re !== undefined) identities.push({ issuer, subjectPattern: re });
    }
  });
  return identities;
}

const MAX_PREDICATE_TYPES = 16;

/** In-toto predicate types (URIs) a DSSE bundle may carry; cosign's signature type must be named too to keep counting. */
function readPredicateTypes(value: unknown, path: string, ctx: SectionContext): string[] {
  const types = stringList(value, path, ctx.problems);
  if (types.length === 0) ctx.problems.at(path, `must name at least one predicate type, e.g. ${COSIGN_SIGN_PREDICATE}`);
  if (types.length > MAX_PREDICATE_TYPES) ctx.problems.at(path, `holds at most ${MAX_PREDICATE_TYPES} predicate types, got ${types.length}`);
  for (const t of types) if (!/^[a-z][a-z0-9+.-]*:[^\s]{1,500}$/i.test(t.value)) ctx.problems.at(t.path, `must be a URI like ${COSIGN_SIGN_PREDICATE}, got ${quote(t.value)}`);
  return types.map((t) => t.value);
}

function readTrustedRoot(value: unknown, path: string, ctx: SectionContext): { text: string; contents: TrustedRootContents } | undefined {
  const name = value === undefined ? PUBLIC_GOOD : string(value, path, ctx.problems);
  if (name === undefined) return undefined;
  let text: string | undefined;
  if (name !== PUBLIC_GOOD) text = readFileFor(name, path, ctx);
  else if (ctx.publicGoodRoot) text = ctx.publicGoodRoot();
  else ctx.problems.at(path, `the shipped ${PUBLIC_GOOD} root is not available here; name a trusted_root.json file`);
  if (text === undefined) return undefined;
  try {
    return { text, contents: readTrustedRootContents(text) };
  } catch (err) {
    ctx.problems.at(path, err instanceof TrustedRootError ? err.message : 'is not a trusted root');
    return undefined;
  }
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

import { expect, vi } from 'vitest';

/**
 * What the authentication tests read back from a server: the parameters of its Bearer
 * challenges (distribution's token spec: `WWW-Authenticate: Bearer realm="...",service="...",
 * scope="..."`), its audit lines, and its output searched for secrets. The same for Node, whose
 * lines are its own JSON, and for workerd, whose console.log lines wrangler passes on with a
 * prefix of its own.
 */

/** How long the audit lines may take to arrive: the output comes over a pipe of its own. */
const AUDIT_WAIT_MS = 5_000;

/** The parameters of a `Bearer k="v",...` challenge. */
export function challenge(res: Response): Record<string, string> {
  const header = res.headers.get('www-authenticate') ?? '';
  expect(header).toMatch(/^Bearer /);
  return Object.fromEntries([...header.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
}

export interface AuditLine {
  who: string;
  action: string;
  repository?: string;
  reference?: string;
  result: string;
  status: number;
  code?: string;
}

/** The audit lines of a server's output, each from its first `{` (after any prefix wrangler puts). */
export function auditLines(output: string): AuditLine[] {
  return output
    .split('\n')
    .filter((l) => l.includes('"msg":"audit"'))
    .map((l) => JSON.parse(l.slice(l.indexOf('{'))) as AuditLine);
}

/** Asserts that one audit line holds at least these fields. */
export type AuditHas = (expected: Partial<AuditLine>) => void;

/**
 * Runs `check` over the audit lines of `output()` until it passes: the last lines may still be
 * on their way.
 */
export async function expectAuditLines(output: () => string, check: (lines: AuditLine[], has: AuditHas) => void): Promise<void> {
  await vi.waitFor(
    () => {
      const lines = auditLines(output());
      const has: AuditHas = (expected) => expect(lines, JSON.stringify(lines, null, 1)).toContainEqual(expect.objectContaining(expected));
      check(lines, has);
    },
    { timeout: AUDIT_WAIT_MS, interval: 100 },
  );
}

/**
 * No secret in `output`: none of `secrets`, no line of the PEM `tokenKey`'s body, and no JWT at
 * all (whatever tokens real clients were given, which the tests never see).
 */
export function expectNoSecrets(output: string, secrets: string[], tokenKey: string): void {
  const keyLines = tokenKey.split('\n').filter((l) => l !== '' && !l.startsWith('-----'));
  for (const secret of [...secrets, ...keyLines]) expect(output.includes(secret), 'a secret in the output').toBe(false);
  expect(output).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}\.eyJ/);
}

// Consul's intention semantics: the most precise matching intention decides (precedence table of
// docs/connect/intentions), L7 permissions are evaluated in order and the first match wins, and
// anything unmatched falls to the default policy.
import { compileFullMatch } from './validate.ts';
import type {
  HeaderMatch,
  HttpMatch,
  Intention,
  IntentionAction,
  IntentionJwt,
  IntentionsSnapshot,
} from './types.ts';

/**
 * Consul's precedence for the default namespace (higher wins): exact → exact 9, `*` → exact 8,
 * exact → `*` 6, `*` → `*` 5.
 */
export function precedenceOf(intention: Pick<Intention, 'source' | 'destination'>): number {
  const srcExact = intention.source !== '*';
  const dstExact = intention.destination !== '*';
  if (dstExact) return srcExact ? 9 : 8;
  return srcExact ? 6 : 5;
}

/** A copy with `precedence` filled in. */
export function withPrecedence(intention: Intention): Intention {
  return { ...intention, precedence: precedenceOf(intention) };
}

/** Intentions in evaluation order: precedence descending, then source and destination names. */
export function sortIntentions(intentions: readonly Intention[]): Intention[] {
  return intentions
    .map(withPrecedence)
    .sort(
      (a, b) =>
        b.precedence! - a.precedence! ||
        cmp(a.destination, b.destination) ||
        cmp(a.source, b.source),
    );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface RequestFacts {
  method: string;
  /** Request target; a query string is ignored for path matching. */
  path: string;
  /** Header names in lower case (as Node's `IncomingMessage#headers` gives them). */
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /**
   * Checks the request's tokens against a JWT requirement (the proxy verifies them; absent, every
   * requirement is unmet as if no token came).
   */
  jwt?: JwtCheck;
}

/**
 * The result of a JWT requirement for one request. `missing`: no token for a provider;
 * `invalid`: a token that does not verify; `claims`: a valid token without a claim required.
 */
export type JwtOutcome =
  | { met: true }
  | { met: false; kind: 'missing' | 'invalid' | 'claims'; provider: string; reason: string };

export type JwtCheck = (requirement: IntentionJwt) => JwtOutcome;

export interface EvaluationInput {
  source: string;
  destination: string;
  /** Omit for a connection-level (L4) decision; give it for each HTTP request. */
  request?: RequestFacts;
}

export interface IntentionDecision {
  allowed: boolean;
  /** False in audit mode: a denial is logged and counted, not enforced. */
  enforced: boolean;
  /** The deciding intention; null when the default policy decided. */
  decidedBy: Intention | null;
  /** Names the rule, e.g. `intention "*" → api deny (precedence 8)`. */
  reason: string;
  /** True when L7 permissions apply and each request must be decided (connection-level only). */
  needsRequest: boolean;
  /**
   * A denial a token would have changed: no token came for a provider a rule requires
   * (`missing`), or a token did not verify (`invalid`, which denies whatever else matches). The
   * proxy answers these 401 instead of 403.
   */
  jwt?: { kind: 'missing' | 'invalid'; provider: string; reason: string };
}

interface CompiledHeader {
  name: string;
  test: (value: string | undefined) => boolean;
}

interface CompiledPermission {
  index: number;
  action: IntentionAction;
  matches: (r: RequestFacts, path: string) => boolean;
  jwt: IntentionJwt | null;
}

interface PairEntry {
  intention: Intention | null;
  permissions: CompiledPermission[] | null;
  /** Connection-level decision, shared by every caller. */
  l4: IntentionDecision;
}

interface CompiledSnapshot {
  sorted: Intention[];
  pairs: Map<string, PairEntry>;
}

/** Distinct source/destination pairs cached per snapshot before the cache is reset. */
export const PAIR_CACHE_LIMIT = 10_000;

const compiledSnapshots = new WeakMap<IntentionsSnapshot, CompiledSnapshot>();

function compileHeader(h: HeaderMatch): CompiledHeader {
  const name = h.name.toLowerCase();
  let base: (v: string | undefined) => boolean;
  if (h.exact !== undefined) {
    const x = h.exact;
    base = (v) => v === x;
  } else if (h.prefix !== undefined) {
    const x = h.prefix;
    base = (v) => v !== undefined && v.startsWith(x);
  } else if (h.suffix !== undefined) {
    const x = h.suffix;
    base = (v) => v !== undefined && v.endsWith(x);
  } else if (h.regex !== undefined) {
    const re = compileFullMatch(h.regex, `header ${h.name}`);
    base = (v) => v !== undefined && re.test(v);
  } else {
    const want = h.present ?? true;
    base = (v) => (v !== undefined) === want;
  }
  return { name, test: h.invert ? (v) => !base(v) : base };
}

/**
 * A request test for an HTTP match (every part given must hold); `path` is the request path
 * without its query string. Service-router routes use the same language.
 */
export function compileHttpMatch(m: HttpMatch): (r: RequestFacts, path: string) => boolean {
  const checks: Array<(r: RequestFacts, path: string) => boolean> = [];
  if (m.pathExact !== undefined) {
    const x = m.pathExact;
    checks.push((_r, p) => p === x);
  } else if (m.pathPrefix !== undefined) {
    const x = m.pathPrefix;
    checks.push((_r, p) => p.startsWith(x));
  } else if (m.pathRegex !== undefined) {
    const re = compileFullMatch(m.pathRegex, 'pathRegex');
    checks.push((_r, p) => re.test(p));
  }
  if (m.methods && m.methods.length > 0) {
    const set = new Set(m.methods);
    checks.push((r) => set.has(r.method.toUpperCase()));
  }
  for (const h of m.header ?? []) {
    const c = compileHeader(h);
    checks.push((r) => {
      const raw = r.headers[c.name];
      return c.test(raw === undefined ? undefined : typeof raw === 'string' ? raw : raw.join(','));
    });
  }
  return (r, p) => checks.every((f) => f(r, p));
}

/** A JWT requirement for a person: `a JWT from okta with role = "admin"`, and so on. */
export function describeIntentionJwt(jwt: IntentionJwt): string {
  return jwt.providers
    .map((p) => {
      const claims = (p.verifyClaims ?? []).map(
        (c) => `${c.path.join('.')} = ${JSON.stringify(c.value)}`,
      );
      return `a JWT from ${p.name}${claims.length ? ` with ${claims.join(' and ')}` : ''}`;
    })
    .join(' and ');
}

function describe(i: Intention): string {
  return `intention "${i.source}" → ${i.destination}`;
}

function compiledFor(snapshot: IntentionsSnapshot): CompiledSnapshot {
  let c = compiledSnapshots.get(snapshot);
  if (!c) {
    c = { sorted: sortIntentions(snapshot.intentions), pairs: new Map() };
    compiledSnapshots.set(snapshot, c);
  }
  return c;
}

function pairEntry(snapshot: IntentionsSnapshot, source: string, destination: string): PairEntry {
  const c = compiledFor(snapshot);
  const key = `${source}\u0000${destination}`;
  const hit = c.pairs.get(key);
  if (hit) return hit;
  const enforced = !snapshot.auditMode;
  const intention =
    c.sorted.find(
      (i) =>
        (i.source === '*' || i.source === source) &&
        (i.destination === '*' || i.destination === destination),
    ) ?? null;
  let entry: PairEntry;
  if (!intention) {
    const allowed = snapshot.defaultPolicy === 'allow';
    entry = {
      intention: null,
      permissions: null,
      l4: Object.freeze({
        allowed,
        enforced,
        decidedBy: null,
        reason: `no intention matches ${source} → ${destination}; default policy ${snapshot.defaultPolicy}`,
        needsRequest: false,
      }),
    };
  } else if (intention.permissions || intention.jwt) {
    entry = {
      intention,
      permissions:
        intention.permissions?.map((p, index) => ({
          index,
          action: p.action,
          matches: compileHttpMatch(p.http),
          jwt: p.jwt ?? null,
        })) ?? null,
      l4: Object.freeze({
        allowed: true,
        enforced,
        decidedBy: intention,
        reason: `${describe(intention)} ${intention.permissions ? 'has L7 permissions' : 'requires a JWT'} (precedence ${intention.precedence}); decided per request`,
        needsRequest: true,
      }),
    };
  } else {
    const action = intention.action ?? snapshot.defaultPolicy;
    entry = {
      intention,
      permissions: null,
      l4: Object.freeze({
        allowed: action === 'allow',
        enforced,
        decidedBy: intention,
        reason: `${describe(intention)} ${action} (precedence ${intention.precedence})`,
        needsRequest: false,
      }),
    };
  }
  if (c.pairs.size >= PAIR_CACHE_LIMIT) c.pairs.clear();
  c.pairs.set(key, entry);
  return entry;
}

/** The path of a request target, without its query string. */
export function stripQuery(path: string): string {
  const q = path.indexOf('?');
  return q === -1 ? path : path.slice(0, q);
}

/**
 * Decides whether `source` may call `destination`. Without `request` this is the connection
 * decision (L7 intentions answer `needsRequest: true`); with it, the per-request decision.
 * Results are cached per snapshot object and source/destination pair: treat snapshots as
 * immutable and replace them on change.
 */
export function evaluateIntentions(
  snapshot: IntentionsSnapshot,
  input: EvaluationInput,
): IntentionDecision {
  const entry = pairEntry(snapshot, input.source, input.destination);
  const intention = entry.intention;
  if (!input.request || !entry.l4.needsRequest || intention === null) return entry.l4;
  const request = input.request;
  const enforced = !snapshot.auditMode;
  const path = stripQuery(request.path);
  const check = (req: IntentionJwt): JwtOutcome =>
    request.jwt
      ? request.jwt(req)
      : {
          met: false,
          kind: 'missing',
          provider: req.providers[0]!.name,
          reason: 'no token verifier',
        };
  /** Why the last rule requiring a token did not match (for the default's reason). */
  let unmet: Extract<JwtOutcome, { met: false }> | null = null;
  const invalid = (o: Extract<JwtOutcome, { met: false }>, rule: string): IntentionDecision => ({
    allowed: false,
    enforced,
    decidedBy: intention,
    reason: `${rule} requires a valid JWT from provider ${o.provider}: ${o.reason}`,
    needsRequest: false,
    jwt: { kind: 'invalid', provider: o.provider, reason: o.reason },
  });
  const byDefault = (why: string): IntentionDecision => {
    const allowed = snapshot.defaultPolicy === 'allow';
    const d: IntentionDecision = {
      allowed,
      enforced,
      decidedBy: null,
      reason: `${why}; default policy ${snapshot.defaultPolicy}`,
      needsRequest: false,
    };
    if (!allowed && unmet?.kind === 'missing')
      d.jwt = { kind: 'missing', provider: unmet.provider, reason: unmet.reason };
    return d;
  };
  if (intention.jwt) {
    const o = check(intention.jwt);
    if (!o.met) {
      if (o.kind === 'invalid') return invalid(o, describe(intention));
      unmet = o;
      return byDefault(
        `${describe(intention)} does not match: it requires a JWT from provider ${o.provider} (${o.reason})`,
      );
    }
  }
  if (!entry.permissions) {
    const action = intention.action ?? snapshot.defaultPolicy;
    return {
      allowed: action === 'allow',
      enforced,
      decidedBy: intention,
      reason: `${describe(intention)} ${action} with a valid JWT (precedence ${intention.precedence})`,
      needsRequest: false,
    };
  }
  const notes: string[] = [];
  for (const p of entry.permissions) {
    if (!p.matches(request, path)) continue;
    if (p.jwt) {
      const o = check(p.jwt);
      if (!o.met) {
        const rule = `${describe(intention)} permission #${p.index + 1}`;
        if (o.kind === 'invalid') return invalid(o, rule);
        unmet = o;
        notes.push(
          `permission #${p.index + 1} requires a JWT from provider ${o.provider} (${o.reason})`,
        );
        continue;
      }
    }
    return {
      allowed: p.action === 'allow',
      enforced,
      decidedBy: intention,
      reason: `${describe(intention)} permission #${p.index + 1} ${p.action} (precedence ${intention.precedence})`,
      needsRequest: false,
    };
  }
  return byDefault(
    `${describe(intention)}: no permission matches ${request.method} ${path}${notes.length ? ` (${notes.join('; ')})` : ''}`,
  );
}

// Consul's intention semantics: the most precise matching intention decides (precedence table of
// docs/connect/intentions), L7 permissions are evaluated in order and the first match wins, and
// anything unmatched falls to the default policy.
import { compileFullMatch } from './validate.ts';
import type {
  HeaderMatch,
  HttpMatch,
  Intention,
  IntentionAction,
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
}

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
}

interface CompiledHeader {
  name: string;
  test: (value: string | undefined) => boolean;
}

interface CompiledPermission {
  index: number;
  action: IntentionAction;
  matches: (r: RequestFacts, path: string) => boolean;
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
  } else if (intention.permissions) {
    entry = {
      intention,
      permissions: intention.permissions.map((p, index) => ({
        index,
        action: p.action,
        matches: compileHttpMatch(p.http),
      })),
      l4: Object.freeze({
        allowed: true,
        enforced,
        decidedBy: intention,
        reason: `${describe(intention)} has L7 permissions (precedence ${intention.precedence}); decided per request`,
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
  if (!entry.permissions || !input.request) return entry.l4;
  const intention = entry.intention!;
  const path = stripQuery(input.request.path);
  for (const p of entry.permissions) {
    if (p.matches(input.request, path)) {
      return {
        allowed: p.action === 'allow',
        enforced: !snapshot.auditMode,
        decidedBy: intention,
        reason: `${describe(intention)} permission #${p.index + 1} ${p.action} (precedence ${intention.precedence})`,
        needsRequest: false,
      };
    }
  }
  return {
    allowed: snapshot.defaultPolicy === 'allow',
    enforced: !snapshot.auditMode,
    decidedBy: null,
    reason: `${describe(intention)}: no permission matches ${input.request.method} ${path}; default policy ${snapshot.defaultPolicy}`,
    needsRequest: false,
  };
}

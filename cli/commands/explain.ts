import type { Command } from 'commander';
import { describeError, isErrorCode, RemoraError, toRemoraError } from '../../lib/errors/index.ts';
import type { ServedProtocol } from '../../lib/consul/protocol.ts';
import {
  failoverTargets,
  flattenSplits,
  parseTargetName,
  redirectLoop,
  resolveShares,
  resolveTarget,
  resolverSettings,
  routerRoutes,
  danglingSubsets,
  targetName,
  splitterShares,
  type ResolverSettings,
  type RouteEntry,
  type Share,
  type SplitShare,
} from '../../agent/central-config.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { compileRoute, type HashCookie, type QueryMatch } from '../../lib/proxy-api/index.ts';
import {
  describeIntentionJwt,
  evaluateIntentions,
  sortIntentions,
  type HttpMatch,
  type IntentionsSnapshot,
  type RequestFacts,
} from '../../lib/intentions/index.ts';
import { requestIntentions } from '../../lib/nats/index.ts';
import { CliExit, print, type CliContext } from '../context.ts';
import { addOperatorOptions, withOperatorSession, type OperatorSession } from './control.ts';

/** Exit code when the explained call would be refused. */
export const EXPLAIN_DENIED_EXIT_CODE = 2;

/** How long explain waits for Consul to tell the destination's protocol. */
export const EXPLAIN_PROTOCOL_LOOKUP_MS = 3000;

const SOURCE_WORDS: Record<ServedProtocol['source'], string> = {
  registration: 'registered with its sidecar',
  'service-defaults': 'its service-defaults entry',
  'proxy-defaults': 'the proxy-defaults entry',
  default: 'no protocol set anywhere',
};

interface DestinationFacts {
  /** The protocol its proxies serve, or a sentence saying why it is not known. */
  served: ServedProtocol | string;
  /** What its service-resolver sets for every caller, and what of it Remora ignores. */
  resolver: { settings: ResolverSettings | null; ignored: string[] } | null;
  /** Everyone's service-resolver settings, as agents read them (redirects, failovers, subsets). */
  resolvers: Map<string, ResolverSettings>;
  /** Its service-router routes and everyone's service-splitter shares, as agents read them. */
  traffic: Traffic | null;
  /** What its config entries make of its sidecars' mutual TLS, when they ask for permissive. */
  mutualTls?: string | null;
}

/** The config entry fields `mutualTlsNote` reads. */
interface MutualTlsEntry {
  MutualTLSMode?: unknown;
  AllowEnablingPermissiveMutualTLS?: unknown;
}

/**
 * One line on `service`'s sidecars when its service-defaults (else proxy-defaults global) set
 * `MutualTLSMode = "permissive"`, as agents read it (docs/agent.md, "Permissive mutual TLS"):
 * applied with the mesh entry's flag, to transparent instances; reported and strict without it.
 * Null when the entries leave the sidecars strict (an instance's definition may still differ).
 */
export function mutualTlsNote(
  service: string,
  serviceDefaults: MutualTlsEntry | undefined,
  proxyDefaults: MutualTlsEntry | undefined,
  mesh: MutualTlsEntry | undefined,
): string | null {
  const mode = (e: MutualTlsEntry | undefined) =>
    typeof e?.MutualTLSMode === 'string' && e.MutualTLSMode !== ''
      ? e.MutualTLSMode.toLowerCase()
      : null;
  const own = mode(serviceDefaults);
  const given = own ?? mode(proxyDefaults);
  if (given !== 'permissive') return null;
  const where = own ? `its service-defaults` : 'proxy-defaults global';
  if (mesh?.AllowEnablingPermissiveMutualTLS !== true)
    return `${service}'s sidecars require mTLS: MutualTLSMode is permissive in ${where}, but the mesh entry does not set AllowEnablingPermissiveMutualTLS = true, so it is not applied`;
  return `${service}'s transparent instances also take plain connections (MutualTLSMode permissive, ${where}): callers outside the mesh reach its app with no intention checked; what follows applies to mesh callers only`;
}

interface Traffic {
  routes: RouteEntry[] | null;
  splitters: Map<string, SplitShare[]>;
  /** Everyone's service-resolver settings, for the subsets that routes and splits name. */
  resolvers: Map<string, ResolverSettings>;
  /** Whether the destination has a splitter entry (even one that cannot apply). */
  hasSplitter: boolean;
  /** What the destination's own router and splitter entries hold that Remora ignores. */
  ignored: string[];
}

/**
 * What Consul says about the destination, as agents read it: the protocol its proxies serve and
 * its service-resolver. Never fails the command: Consul's silence becomes a sentence.
 */
async function destinationFacts(s: OperatorSession, service: string): Promise<DestinationFacts> {
  const { createConsulClient, consulClientOptions, servedProtocol } =
    await import('../../lib/consul/index.ts');
  const consul = createConsulClient({
    ...consulClientOptions(s.config.consul, createSilentLogger()),
    timeoutMs: EXPLAIN_PROTOCOL_LOOKUP_MS,
  });
  try {
    const [served, resolvers, splitters, routers, defaults, proxyDefaults, mesh] =
      await Promise.all([
        servedProtocol(consul, service),
        consul.config.list('service-resolver').catch(() => null),
        consul.config.list('service-splitter').catch(() => null),
        consul.config.list('service-router').catch(() => null),
        consul.config.list('service-defaults').catch(() => null),
        consul.config.list('proxy-defaults').catch(() => null),
        consul.config.list('mesh').catch(() => null),
      ]);
    const entry = resolvers?.entries.find((e) => e.Name === service);
    const ignored = new Map<string, string>();
    // every splitter and resolver is read as agents read it; the lines shown are the destination's own
    const traffic: Traffic = {
      routes: null,
      splitters: new Map(),
      resolvers: new Map(),
      hasSplitter: false,
      ignored: [],
    };
    for (const e of resolvers?.entries ?? []) {
      const r = e === entry ? null : resolverSettings(e, new Map(), s.config.datacenter);
      if (r) traffic.resolvers.set(e.Name, r);
    }
    for (const e of splitters?.entries ?? []) {
      const found = new Map<string, string>();
      const sp = splitterShares(e, found);
      if (sp) traffic.splitters.set(e.Name, sp);
      if (e.Name !== service) continue;
      traffic.hasSplitter = true;
      traffic.ignored.push(...found.values());
    }
    const router = routers?.entries.find((e) => e.Name === service);
    if (router) {
      const found = new Map<string, string>();
      traffic.routes = routerRoutes(router, found);
      traffic.ignored.push(...found.values());
    }
    const settings = entry ? resolverSettings(entry, ignored, s.config.datacenter) : null;
    if (settings) traffic.resolvers.set(service, settings);
    return {
      served: served ?? `no sidecar of ${service} is registered in Consul`,
      resolver: entry ? { settings, ignored: [...ignored.values()] } : null,
      resolvers: traffic.resolvers,
      traffic: traffic.hasSplitter || router ? traffic : null,
      mutualTls: mutualTlsNote(
        service,
        // entries as Consul stores them; the note reads two optional fields
        defaults?.entries.find((e) => e.Name === service) as MutualTlsEntry | undefined,
        proxyDefaults?.entries.find((e) => e.Name === 'global') as MutualTlsEntry | undefined,
        mesh?.entries[0] as MutualTlsEntry | undefined,
      ),
    };
  } catch (err) {
    // the client's message names the address and the way out
    return {
      served: toRemoraError(err).message,
      resolver: null,
      resolvers: new Map(),
      traffic: null,
    };
  } finally {
    consul.close();
  }
}

/** What a cookie policy does for callers without its cookie, in words (or nothing). */
function madeUp(c: HashCookie | undefined): string {
  if (c === undefined) return '';
  const life = c.ttlSeconds === 0 ? 'for the session' : `for ${c.ttlSeconds}s`;
  return ` (set ${life}${c.path !== undefined ? ` on ${c.path}` : ''} when a caller has none)`;
}

/** A resolver's settings in words, e.g. `connect timeout 2s, balancing least_request`. */
function describeResolver(r: ResolverSettings | null): string {
  const parts: string[] = [];
  if (r?.connectTimeoutMs) parts.push(`connect timeout ${r.connectTimeoutMs / 1000}s`);
  if (r?.requestTimeoutMs) parts.push(`request timeout ${r.requestTimeoutMs / 1000}s`);
  if (r?.loadBalancer) {
    const on = (r.hashPolicies ?? []).map((h) =>
      h.sourceIp ? "the caller's address" : `${h.field} ${h.fieldValue}${madeUp(h.cookie)}`,
    );
    parts.push(`balancing ${r.loadBalancer}${on.length > 0 ? ` on ${on.join(', then ')}` : ''}`);
  }
  const subsets = Object.entries(r?.subsets ?? {}).map(
    ([name, expr]) =>
      `${name}${r?.defaultSubset === name ? ' (the default)' : ''} = ${expr.trim() === '' ? 'every instance' : `instances where ${expr}`}`,
  );
  const settings = parts.length > 0 ? `${parts.join(', ')} for every caller` : '';
  const picked = subsets.length > 0 ? `subsets ${subsets.join('; ')}` : '';
  return [settings, picked].filter(Boolean).join('; ') || 'nothing Remora applies';
}

/**
 * Prints whether `source` may call `service` (that service's sidecar checks its own intentions);
 * true when the call would be refused.
 */
function printVerdict(
  ctx: CliContext,
  snap: IntentionsSnapshot,
  source: string,
  service: string,
  request?: RequestFacts,
): boolean {
  const t = evaluateIntentions(snap, {
    source,
    destination: service,
    ...(request ? { request } : {}),
  });
  const word = t.allowed ? 'allowed' : t.enforced ? 'DENIED' : 'denied (audit mode)';
  print(ctx, `    ${source} → ${service}: ${word} (${t.reason})`);
  return !t.allowed && t.enforced;
}

/**
 * Prints where the destination's resolvers send its calls: a redirect (followed to its end) and
 * the failover targets, with whether the source may call each service they reach, whose own
 * sidecar checks its intentions. Returns the services of a redirect that would refuse every call.
 */
function explainResolverChain(
  ctx: CliContext,
  snap: IntentionsSnapshot,
  pair: { source: string; destination: string },
  resolvers: ReadonlyMap<string, ResolverSettings>,
  request?: RequestFacts,
): string[] {
  const { source, destination } = pair;
  const resolver = (n: string) => resolvers.get(n) ?? null;
  const main = resolveTarget(destination, undefined, resolver);
  const failover = failoverTargets(main, resolver);
  const verdict = (service: string) => printVerdict(ctx, snap, source, service, request);
  const refused: string[] = [];
  const mainService = parseTargetName(main).service;
  if (main !== destination) {
    print(ctx, `  ${destination}'s service-resolver: redirects every call to ${main}`);
    if (mainService !== destination && verdict(mainService)) refused.push(mainService);
  }
  if (failover.length > 0) {
    print(
      ctx,
      `  when ${main} has no healthy instance, calls fail over to ${failover.join(', then ')}`,
    );
    const seen = new Set([destination, mainService]);
    for (const n of failover) {
      const service = parseTargetName(n).service;
      if (seen.has(service)) continue;
      seen.add(service);
      if (verdict(service))
        print(
          ctx,
          `      calls failed over to ${service} would be refused: remora intention create ${source} ${service}`,
        );
    }
  }
  for (const line of redirectLoop(destination, resolver).values())
    print(ctx, `    ignored: ${line}`);
  return refused;
}

/** Shares in words: `api 90 %, api-v2 10 %` (a subset as `api/v2`). */
function describeShares(shares: readonly Share[]): string {
  return shares
    .map(
      (sh) =>
        `${sh.target} ${Math.round(sh.weight * 100) / 100} %${sh.requestHeaders || sh.responseHeaders ? ' (changes headers)' : ''}`,
    )
    .join(', ');
}

/** An HTTP match in words: `path prefix /admin/, methods GET`. */
function describeMatch(m: HttpMatch, query?: readonly QueryMatch[]): string {
  const parts: string[] = [];
  if (m.pathExact !== undefined) parts.push(`path ${m.pathExact}`);
  if (m.pathPrefix !== undefined) parts.push(`path prefix ${m.pathPrefix}`);
  if (m.pathRegex !== undefined) parts.push(`path regex ${m.pathRegex}`);
  if (m.methods?.length) parts.push(`methods ${m.methods.join(' ')}`);
  for (const h of m.header ?? []) parts.push(`header ${h.name}`);
  for (const q of query ?? []) parts.push(`query ${q.name}`);
  return parts.join(', ');
}

/**
 * Prints where the destination's service-router and service-splitter send calls (the route a
 * given request meets, or every route), and for each service other than the destination
 * whether the source may call it: that service's sidecar checks its own intentions. Returns the
 * services whose share would be refused.
 */
function explainTraffic(
  ctx: CliContext,
  snap: IntentionsSnapshot,
  pair: { source: string; destination: string },
  traffic: Traffic,
  o: { served: ServedProtocol | string | null; request?: RequestFacts },
): string[] {
  const { source, destination } = pair;
  const refused: string[] = [];
  const splitter = (n: string) => traffic.splitters.get(n) ?? null;
  const resolver = (n: string) => traffic.resolvers.get(n) ?? null;
  // a route naming a subset goes to it past the service's splitter, as agents send it
  const sharesOf = (n: string, subset?: string) =>
    resolveShares(
      (subset === undefined ? flattenSplits(n, splitter) : null) ?? [
        { target: targetName(n, subset), weight: 100 },
      ],
      resolver,
    );
  if (typeof o.served === 'object' && o.served?.protocol === 'tcp') {
    print(ctx, `  ${destination}'s routes and splits: do not apply, ${destination} serves tcp`);
  } else {
    const reached = new Map<string, number>();
    const reach = (shares: readonly Share[]) => {
      for (const sh of shares) if (sh.weight > 0) reached.set(sh.target, sh.weight);
    };
    const routes = traffic.routes ?? [];
    const request = o.request;
    const hit = request ? routes.findIndex((r) => compileRoute(r)(request)) : -1;
    routes.forEach((r, i) => {
      if (request && i !== hit) return;
      const shares = sharesOf(r.service, r.subset);
      reach(shares);
      print(
        ctx,
        `  ${destination}'s service-router: ${request ? 'this request meets ' : ''}route ${i + 1} (${describeMatch(r.match, r.query)}) → ${describeShares(shares)}${r.prefixRewrite !== undefined ? `, path prefix rewritten to ${r.prefixRewrite}` : ''}${r.requestTimeoutMs !== undefined ? `, request timeout ${r.requestTimeoutMs / 1000}s` : ''}${r.maxRetries !== undefined ? `, at most ${r.maxRetries} retries` : ''}${r.retryOn ? `, also retried on ${r.retryOn.join(', ')}` : ''}${r.retryOnGrpc ? `, gRPC streams also retried on grpc-status ${r.retryOnGrpc.join(', ')}` : ''}${r.requestHeaders || r.responseHeaders ? ', changes headers' : ''}`,
      );
    });
    if (!request || hit === -1) {
      const shares = sharesOf(destination);
      reach(shares);
      const what = routes.length > 0 ? (request ? 'no route matches → ' : 'other requests → ') : '';
      const entry = traffic.hasSplitter ? 'service-splitter' : 'service-router';
      print(ctx, `  ${destination}'s ${entry}: ${what}${describeShares(shares)}`);
    }
    const services = new Set([...reached.keys()].map((n) => parseTargetName(n).service));
    for (const target of services) {
      if (target === destination) continue;
      if (printVerdict(ctx, snap, source, target, request)) refused.push(target);
    }
  }
  const dangling = danglingSubsets(destination, splitter(destination), traffic.routes, resolver);
  for (const line of [...traffic.ignored, ...dangling.values()]) print(ctx, `    ignored: ${line}`);
  return refused;
}

function explainCode(ctx: CliContext, code: string): void {
  if (!isErrorCode(code))
    throw new RemoraError(
      'REMORA_E_USAGE',
      `${code} is not a Remora error code; see docs/errors.md`,
      { code },
    );
  const spec = describeError(code);
  print(ctx, `${code}${spec.status ? ` (HTTP ${spec.status})` : ''}`);
  print(ctx, `  what happened: ${spec.meaning}`);
  print(ctx, `  what to do:    ${spec.remedy}`);
}

export function registerExplain(program: Command, ctx: CliContext): void {
  addOperatorOptions(
    program
      .command('explain <source> <destination>')
      .description(
        'explain why a call from source to destination succeeds or is refused (the deciding intention, or the meaning of an x-remora-error code)',
      )
      .option(
        '--code <code>',
        'explain the x-remora-error code a refused call carried (no network needed)',
      )
      .option('--method <method>', 'HTTP method, to evaluate L7 permissions')
      .option('--path <path>', 'HTTP path, to evaluate L7 permissions'),
  ).action(
    async (
      source: string,
      destination: string,
      opts: { code?: string; method?: string; path?: string; config?: string },
    ) => {
      if (opts.code !== undefined) {
        explainCode(ctx, opts.code);
        return;
      }
      await withOperatorSession(ctx, opts, async (s) => {
        const [snap, facts] = await Promise.all([
          requestIntentions(s.nc, s.config.datacenter, s.req),
          destination === '*' ? Promise.resolve(null) : destinationFacts(s, destination),
        ]);
        const served = facts?.served ?? null;
        // explain cannot see a caller's tokens: it assumes they verify, and lists what they need
        const request =
          opts.method !== undefined || opts.path !== undefined
            ? {
                method: (opts.method ?? 'GET').toUpperCase(),
                path: opts.path ?? '/',
                headers: {},
                jwt: () => ({ met: true }) as const,
              }
            : undefined;
        const pair = { source, destination };
        const d = evaluateIntentions(snap, { ...pair, ...(request ? { request } : {}) });
        // L7 permissions on a tcp destination: its proxy cannot see requests and refuses the
        // connection (docs/proxy.md), whatever a request would have been allowed
        const perConnection = request ? evaluateIntentions(snap, pair) : d;
        const l7OnTcp =
          typeof served === 'object' && served?.protocol === 'tcp' && perConnection.needsRequest;
        const allowed = d.allowed && !l7OnTcp;
        const enforced = l7OnTcp ? perConnection.enforced : d.enforced;
        print(
          ctx,
          `${source} → ${destination}: ${allowed ? 'allowed' : enforced ? 'DENIED' : 'denied (audit mode: logged, not enforced)'}`,
        );
        print(
          ctx,
          `  decided by: ${
            l7OnTcp
              ? `${perConnection.reason}, but ${destination} serves tcp, where requests cannot be checked: its proxies refuse these connections`
              : d.reason
          }`,
        );
        // a redirect to another service: that service's sidecar decides, not the destination's
        const redirectedTo = facts
          ? parseTargetName(
              resolveTarget(destination, undefined, (n) => facts.resolvers.get(n) ?? null),
            ).service
          : destination;
        const redirected = redirectedTo !== destination;
        if (redirected)
          print(
            ctx,
            `  ${destination}'s intentions do not decide: its service-resolver redirects every call to ${redirectedTo}, whose sidecar checks its own (below)`,
          );
        if (served !== null)
          print(
            ctx,
            `  ${destination} serves: ${typeof served === 'string' ? `unknown (${served})` : `${served.protocol} (${SOURCE_WORDS[served.source]})`}`,
          );
        if (facts?.mutualTls) print(ctx, `  ${facts.mutualTls}`);
        if (facts?.resolver) {
          print(
            ctx,
            `  ${destination}'s service-resolver: ${describeResolver(facts.resolver.settings)}`,
          );
          for (const line of facts.resolver.ignored) print(ctx, `    ignored: ${line}`);
        }
        const refusedRedirect = facts
          ? explainResolverChain(ctx, snap, pair, facts.resolvers, request)
          : [];
        const refusedShares = facts?.traffic
          ? explainTraffic(ctx, snap, pair, facts.traffic, {
              served,
              ...(request ? { request } : {}),
            })
          : [];
        if (d.needsRequest && !l7OnTcp)
          print(
            ctx,
            '  L7 permissions or JWT requirements decide each request; give --method and --path to evaluate one',
          );
        const relevant = sortIntentions(snap.intentions).filter(
          (i) =>
            (i.source === source || i.source === '*') &&
            (i.destination === destination || i.destination === '*'),
        );
        print(
          ctx,
          `  intentions that match this pair (precedence order; revision ${snap.revision}, default policy ${snap.defaultPolicy}):`,
        );
        if (relevant.length === 0) print(ctx, '    none');
        let jwtRequired = false;
        for (const i of relevant) {
          print(
            ctx,
            `    ${i.source} → ${i.destination}: ${i.action ?? `${i.permissions?.length ?? 0} L7 permission(s)`} (precedence ${i.precedence})`,
          );
          if (i.jwt) {
            jwtRequired = true;
            print(ctx, `      requires ${describeIntentionJwt(i.jwt)} on every request`);
          }
          for (const [n, p] of (i.permissions ?? []).entries())
            if (p.jwt) {
              jwtRequired = true;
              print(
                ctx,
                `      permission #${n + 1} (${p.action}) requires ${describeIntentionJwt(p.jwt)}`,
              );
            }
        }
        if (jwtRequired)
          print(
            ctx,
            '  this assumes each request carries the valid JWTs listed; one without them is answered 401 (x-remora-error: REMORA_E_PROXY_JWT_MISSING, or REMORA_E_PROXY_JWT_INVALID for a token that does not verify; remora explain --code <code>)',
          );
        if (l7OnTcp && enforced && !redirected) {
          print(ctx, `  the connection is closed before the app sees it (no HTTP answer)`);
          print(
            ctx,
            `  to allow: set ${destination}'s protocol to http (Protocol = "http" in its service-defaults, or proxy.config.protocol in its definition), or give ${source} an L4 intention: remora intention create ${source} ${destination} --allow`,
          );
          throw new CliExit(EXPLAIN_DENIED_EXIT_CODE);
        }
        if (!allowed && enforced && !redirected) {
          print(ctx, `  refused calls carry x-remora-error: REMORA_E_PROXY_INTENTION_DENIED`);
          print(ctx, `  to allow: remora intention create ${source} ${destination}`);
          throw new CliExit(EXPLAIN_DENIED_EXIT_CODE);
        }
        for (const target of refusedRedirect)
          print(
            ctx,
            `  to allow the redirect to ${target}: remora intention create ${source} ${target}`,
          );
        if (refusedShares.length > 0) {
          for (const target of refusedShares)
            print(ctx, `  to allow ${target}'s share: remora intention create ${source} ${target}`);
        }
        if (refusedShares.length > 0 || refusedRedirect.length > 0)
          throw new CliExit(EXPLAIN_DENIED_EXIT_CODE);
      });
    },
  );
}

// The control plane as the agent sees it, over NATS (DESIGN §4). Certificate requests carry
// the agent's trace context in NATS headers, so one trace shows agent → control → agent.
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import {
  headersWithTraceContext,
  requestIntentions,
  requestRoots,
  requestSign,
  subscribeIntentionsChanged,
  subscribeRootsChanged,
  type NatsConnection,
} from '../lib/nats/index.ts';
import type { Tracing } from '../lib/telemetry/index.ts';
import type { Logger } from '../lib/log/index.ts';
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';
import type { ControlPort, TrustBundle } from './ports.ts';

/** The wire message without its version field: what the agent keeps and hands to proxies. */
function policyOf(s: IntentionsSnapshot): IntentionsSnapshot {
  return {
    revision: s.revision,
    defaultPolicy: s.defaultPolicy,
    auditMode: s.auditMode,
    intentions: s.intentions,
  };
}

function bundleOf(r: TrustBundle): TrustBundle {
  return { trustDomain: r.trustDomain, activeRootId: r.activeRootId, roots: r.roots };
}

export function createNatsControlPort(o: {
  nc: NatsConnection;
  datacenter: string;
  node: string;
  nodeToken: string;
  requestTimeoutMs: number;
  tracing: Tracing | null;
  logger: Logger;
}): ControlPort {
  const { nc, datacenter: dc } = o;
  const opts = { timeoutMs: o.requestTimeoutMs };
  return {
    async sign(req) {
      const tracer = o.tracing?.tracer ?? trace.getTracer('remora-agent');
      const span = tracer.startSpan(`ca.sign ${req.service}`, {
        kind: SpanKind.CLIENT,
        attributes: {
          'messaging.system': 'nats',
          'messaging.destination.name': `remora.v1.${dc}.ca.sign`,
          'remora.service': req.service,
          'remora.instance': req.serviceId,
        },
      });
      const carrier: Record<string, string> = {};
      o.tracing?.inject(trace.setSpan(context.active(), span), carrier);
      try {
        const reply = await requestSign(
          nc,
          dc,
          { node: o.node, token: o.nodeToken, ...req },
          { ...opts, headers: headersWithTraceContext(carrier) },
        );
        span.setAttribute('remora.cert.serial', reply.serial);
        span.setStatus({ code: SpanStatusCode.OK });
        return reply;
      } catch (err) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
        span.setAttribute('error.type', (err as { code?: string }).code ?? 'error');
        throw err;
      } finally {
        span.end();
      }
    },
    roots: async () => bundleOf(await requestRoots(nc, dc, opts)),
    intentions: async () => policyOf(await requestIntentions(nc, dc, opts)),
    onRootsChanged(fn) {
      const sub = subscribeRootsChanged(nc, dc, (r) => fn(bundleOf(r)), { logger: o.logger });
      return () => sub.unsubscribe();
    },
    onIntentionsChanged(fn) {
      const sub = subscribeIntentionsChanged(nc, dc, (s) => fn(policyOf(s)), {
        logger: o.logger,
      });
      return () => sub.unsubscribe();
    },
    async close() {
      await nc.drain().catch(() => nc.close());
    },
  };
}

import t from 'tap';
import { renderStatus } from '../../cli/commands/status.ts';
import type { AgentStatus } from '../../agent/agent.ts';

t.test('remora status names the instances that call an upstream by their intentions', async (t) => {
  const status: AgentStatus = {
    node: 'client',
    datacenter: 'dc1',
    startedAt: '2026-11-28T05:00:00.000Z',
    waitingFor: [],
    trustBundle: { known: true, live: true, lastError: null },
    intentions: { known: true, live: true, lastError: null, revision: 4 },
    instances: [],
    upstreams: [
      { service: 'api', endpoints: 2, synced: true, users: ['web-1'], lastError: null },
      { service: 'ledger', endpoints: 1, synced: true, users: ['web-1/derived'], lastError: null },
    ],
    problems: [],
  };
  const out = renderStatus(status, Date.parse('2026-11-28T06:00:00.000Z'));
  t.match(out, /^api\s+2\s+yes\s+web-1$/m, 'an explicit upstream');
  t.match(out, /^ledger\s+1\s+yes\s+web-1 \(by intentions\)$/m, 'a derived one says so');
});

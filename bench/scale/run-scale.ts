import type { ScenarioContext, ScenarioReport } from '../lib/scenario.ts';

export async function runScale(_ctx: ScenarioContext): Promise<ScenarioReport> {
  return { headline: [], section: [], commands: [] };
}

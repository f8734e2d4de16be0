import type { ScenarioContext, ScenarioReport } from '../lib/scenario.ts';

export async function runControl(_ctx: ScenarioContext): Promise<ScenarioReport> {
  return { headline: [], section: [], commands: [] };
}

// The fault load run inside a lab host (a network namespace): the same generator as the loopback
// scenarios (load.ts), driven over stdio by test/faults/lab-link.test.ts.
//   node test/faults/lab-load.ts <url> <scenario>
// Prints `PROGRESS <ok> <sent>` every 100 ms; on a `stop` line on stdin it stops the load and
// prints `OUTCOMES <json>` (every request's outcome), then exits.
import { createInterface } from 'node:readline';
import { startLoad } from './load.ts';

const [url, scenario] = process.argv.slice(2);
if (!url || !scenario) {
  process.stderr.write('usage: node test/faults/lab-load.ts <url> <scenario>\n');
  process.exit(2);
}
const load = startLoad({ url, scenario });
const progress = setInterval(
  () => process.stdout.write(`PROGRESS ${load.ok()} ${load.outcomes.length}\n`),
  100,
);
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'stop') return;
  void load.stop().then((outcomes) => {
    clearInterval(progress);
    process.stdout.write(`OUTCOMES ${JSON.stringify(outcomes)}\n`, () => process.exit(0));
  });
});

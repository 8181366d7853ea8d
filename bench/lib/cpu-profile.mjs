// Preloaded (node --import) into a server that `npm run bench -- --profile …` starts: the first
// SIGUSR2 starts V8's CPU profiler in-process, the second stops it and writes the profile to
// BENCH_PROFILE_FILE, so the profile covers the measured window only (not start-up or warm-up).
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const session = new Session();
session.connect();
let running = false;
const post = (method, params = {}) =>
  new Promise((resolve, reject) =>
    session.post(method, params, (err, result) => (err ? reject(err) : resolve(result))),
  );
process.on('SIGUSR2', async () => {
  if (!running) {
    running = true;
    await post('Profiler.enable');
    await post('Profiler.setSamplingInterval', { interval: 500 });
    await post('Profiler.start');
    return;
  }
  running = false;
  const { profile } = await post('Profiler.stop');
  writeFileSync(process.env.BENCH_PROFILE_FILE ?? 'bench.cpuprofile', JSON.stringify(profile));
});

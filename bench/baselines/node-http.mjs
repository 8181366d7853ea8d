// Baseline 1: bare node:http answering every request with the same product JSON the service would
// send — the floor of Node's per-request cost on this machine. No routing, no headers beyond the
// content type, no logging.
import { createServer } from 'node:http';

const body = Buffer.from(process.env.BASELINE_BODY ?? '{"ok":true}');
const port = Number(process.env.PORT ?? 3101);

createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length });
  res.end(body);
}).listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${port}\n`);
});

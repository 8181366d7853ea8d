// Baseline 2: the guide's "Express.js Production Template" (section 1.3), as written there —
// helmet, credentialed CORS for one origin, express-rate-limit on /api/, morgan "combined", static
// files, JSON errors — serving the same product JSON from memory on the same route. Its rate limit
// is raised so that the benchmark measures answers, not 429s (the limiter still runs).
import { createWriteStream } from 'node:fs';
import cors from 'cors';
import express from 'express';
import rateLimit from 'express-rate-limit';
import helmet from 'helmet';
import morgan from 'morgan';

const body = JSON.parse(process.env.BASELINE_BODY ?? '{"ok":true}');
const port = Number(process.env.PORT ?? 3102);
const log = createWriteStream(process.env.BASELINE_LOG ?? '/dev/null', { flags: 'a' });

const app = express();
app.use(helmet());
app.use(cors({ origin: process.env.CORS_ORIGIN || 'http://localhost:3000', credentials: true }));
app.use('/api/', rateLimit({ windowMs: 15 * 60 * 1000, max: Number(process.env.RATE_LIMIT_MAX ?? 100) }));
app.use(morgan('combined', { stream: log }));
app.use(
  express.static(process.env.STATIC_DIR ?? 'public', {
    maxAge: '1d',
    setHeaders: (res, path) => {
      if (path.endsWith('.html')) res.setHeader('Cache-Control', 'no-cache');
    },
  }),
);
app.get('/api/products/:id', (_req, res) => res.json(body));
app.get('/health', (_req, res) =>
  res.json({ status: 'healthy', timestamp: new Date().toISOString(), uptime: process.uptime() }),
);
app.use((err, _req, res, _next) => {
  res
    .status(500)
    .json({ error: process.env.NODE_ENV === 'production' ? 'Something went wrong!' : err.message });
});
app.listen(port, '127.0.0.1', () => process.stdout.write(`ready ${port}\n`));

import { type ParsedMail, simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { waitUntil } from './wait.js';

export interface ReceivedMail {
  readonly to: string[];
  readonly from: string;
  readonly subject: string;
  readonly text: string;
  readonly html: string;
  readonly messageId: string;
  readonly parsed: ParsedMail;
}

export interface TestSmtpServer {
  /** smtp://127.0.0.1:<port> — for MAIL_SMTP_URL. */
  readonly url: string;
  /** Every message accepted (answered 250), in order. */
  readonly received: ReceivedMail[];
  /**
   * While set, a message's DATA is read in full but not answered: the sender waits for the 250
   * (a worker killed now has not had the message accepted; the server then discards it).
   */
  hold(on: boolean): void;
  /**
   * Stops holding and answers 250 to every held message whose sender is still connected (those of
   * a sender that went away are discarded, as a real server does).
   */
  release(): void;
  /**
   * Runs `hook` on each message after it is read and parsed and before the 250 that accepts it
   * (undefined: none). The sender is then still waiting; once the hook resolves it gets its 250.
   */
  beforeAccept(hook: ((mail: ReceivedMail) => Promise<void>) | undefined): void;
  /** Resolves when a held message is waiting for its answer (more than `since` held so far). */
  waitForHeld(timeoutMs?: number, since?: number): Promise<void>;
  /** How many messages have been held so far. */
  heldCount(): number;
  /** Waits for the first received mail to `to` (with a subject matching `subject`), after `since` mails. */
  waitForMail(
    to: string,
    options?: { since?: number; timeoutMs?: number; subject?: RegExp },
  ): Promise<ReceivedMail>;
  close(): Promise<void>;
}

/**
 * A real SMTP server in the test process (the `smtp-server` package): no auth, no TLS, loopback
 * only; every accepted message is parsed (mailparser) and kept.
 */
export async function startSmtpServer(): Promise<TestSmtpServer> {
  const received: ReceivedMail[] = [];
  let holding = false;
  let held = 0;
  let pending: Array<{ session: string; finish: () => void }> = [];
  let acceptHook: ((mail: ReceivedMail) => Promise<void>) | undefined;
  const server = new SMTPServer({
    onClose(session) {
      pending = pending.filter((p) => p.session !== session.id);
    },
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const finish = () => {
          simpleParser(Buffer.concat(chunks))
            .then(async (parsed) => {
              const mail: ReceivedMail = {
                to: session.envelope.rcptTo.map((r) => r.address.toLowerCase()),
                from: typeof session.envelope.mailFrom === 'object' ? session.envelope.mailFrom.address : '',
                subject: parsed.subject ?? '',
                text: parsed.text ?? '',
                html: typeof parsed.html === 'string' ? parsed.html : '',
                messageId: parsed.messageId ?? '',
                parsed,
              };
              await acceptHook?.(mail);
              received.push(mail);
              callback();
            })
            .catch((err: Error) => callback(err));
        };
        if (!holding) {
          finish();
          return;
        }
        // Held: not answered until release(); the connection's end discards the message.
        held++;
        pending.push({ session: session.id, finish });
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.server.address();
  if (address === null || typeof address !== 'object') throw new Error('SMTP server has no address');
  return {
    url: `smtp://127.0.0.1:${address.port}`,
    received,
    hold(on) {
      holding = on;
    },
    beforeAccept(hook) {
      acceptHook = hook;
    },
    release() {
      holding = false;
      const answer = pending;
      pending = [];
      for (const p of answer) p.finish();
    },
    async waitForHeld(timeoutMs = 60_000, since = 0) {
      await waitUntil(() => held > since, { timeoutMs, what: 'a held SMTP message' });
    },
    heldCount: () => held,
    async waitForMail(to, options = {}) {
      const since = options.since ?? 0;
      const find = () =>
        received
          .slice(since)
          .find((m) => m.to.includes(to.toLowerCase()) && (options.subject?.test(m.subject) ?? true));
      await waitUntil(() => find() !== undefined, {
        timeoutMs: options.timeoutMs ?? 60_000,
        what: `a mail to ${to}`,
      });
      const mail = find();
      if (mail === undefined) throw new Error('unreachable');
      return mail;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}

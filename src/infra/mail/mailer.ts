import nodemailer, { type Transporter } from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { RenderedMail } from './templates.js';

export interface OutgoingMail extends RenderedMail {
  readonly to: string;
  /**
   * The Message-ID, made from the job's key: a retry of the same job sends the same id, so the
   * receiving side can tell a duplicate (and the tests can count deliveries per message).
   */
  readonly messageId: string;
}

export interface Mailer {
  /** `smtp`: a real server; `print`: development catch-all; `drop`: production without SMTP. */
  readonly mode: 'smtp' | 'print' | 'drop';
  /** Resolves when the server has accepted the message (250 after DATA); rejects otherwise. */
  send(mail: OutgoingMail): Promise<void>;
  close(): void;
}

/**
 * Mail through SMTP (nodemailer). Without MAIL_SMTP_URL, development and tests print each message
 * (headers and the text part) on stdout — a local catch-all: the links in it work —, tests without
 * a server drop them quietly, and production sends nothing and says so at start-up and at every
 * message (decision 0060).
 */
export function createMailer(
  config: Config['mail'],
  env: Config['env'],
  logger: Logger,
  print: (text: string) => void = (text) => process.stdout.write(text),
): Mailer {
  if (config.smtpUrl === undefined) {
    if (env === 'test') {
      return {
        mode: 'drop',
        async send(mail) {
          logger.debug({ event: 'mail_dropped', messageId: mail.messageId }, 'mail not sent (test, no SMTP)');
        },
        close() {},
      };
    }
    if (env === 'production') {
      logger.warn(
        { event: 'mail_not_configured' },
        'MAIL_SMTP_URL is not set: password-reset and verification mails are not sent',
      );
      return {
        mode: 'drop',
        async send(mail) {
          logger.warn({ event: 'mail_dropped', messageId: mail.messageId }, 'mail not sent: no SMTP server');
        },
        close() {},
      };
    }
    return {
      mode: 'print',
      async send(mail) {
        print(
          `\n----- mail (not sent: MAIL_SMTP_URL is unset) -----\nFrom: ${config.from}\nTo: ${mail.to}\nSubject: ${mail.subject}\nMessage-ID: ${mail.messageId}\n\n${mail.text}----- end of mail -----\n`,
        );
        logger.info({ event: 'mail_printed', messageId: mail.messageId }, 'mail printed (development)');
      },
      close() {},
    };
  }
  const options: SMTPTransport.Options = {
    connectionTimeout: config.timeoutMs,
    greetingTimeout: config.timeoutMs,
    socketTimeout: config.timeoutMs,
  };
  const transport: Transporter = nodemailer.createTransport(config.smtpUrl, options);
  return {
    mode: 'smtp',
    async send(mail) {
      const info = await transport.sendMail({
        from: config.from,
        to: mail.to,
        subject: mail.subject,
        text: mail.text,
        html: mail.html,
        messageId: mail.messageId,
      });
      logger.info(
        { event: 'mail_sent', messageId: mail.messageId, response: String(info.response).slice(0, 200) },
        'mail sent',
      );
    },
    close() {
      transport.close();
    },
  };
}

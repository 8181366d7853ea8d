import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { createMailer } from '../../src/infra/mail/mailer.js';
import { renderMail } from '../../src/infra/mail/templates.js';
import { startSmtpServer, type TestSmtpServer } from '../harness/smtp.js';
import { testConfig } from '../helper.js';

const silent = pino({ level: 'silent' });

describe('mail through a real SMTP server', () => {
  let smtp: TestSmtpServer;
  before(async () => {
    smtp = await startSmtpServer();
  });
  after(async () => {
    await smtp.close();
  });

  test('a rendered mail arrives with its text and HTML parts, sender and Message-ID', async () => {
    const config = testConfig({ MAIL_SMTP_URL: smtp.url, MAIL_FROM: 'Shop <shop@example.test>' });
    const mailer = createMailer(config.mail, config.env, silent);
    assert.equal(mailer.mode, 'smtp');
    const link = 'https://shop.example.test/reset-password#token=abc';
    await mailer.send({
      to: 'Alice@Example.test',
      messageId: '<job-1@shipshape>',
      ...renderMail({ kind: 'password-reset', username: '<alice & co>', link, minutes: 30 }),
    });
    mailer.close();
    const mail = await smtp.waitForMail('alice@example.test');
    assert.equal(mail.subject, 'Reset your Shipshape password');
    assert.equal(mail.messageId, '<job-1@shipshape>');
    assert.equal(mail.parsed.from?.value[0]?.address, 'shop@example.test');
    assert.match(mail.text, /for 30 minutes/);
    assert.ok(mail.text.includes(link));
    assert.ok(mail.html.includes('href="https://shop.example.test/reset-password#token=abc"'));
    // Values are escaped in the HTML part, verbatim in the text part.
    assert.ok(mail.html.includes('Hello &lt;alice &amp; co&gt;,'));
    assert.ok(mail.text.includes('Hello <alice & co>,'));
  });

  test('a server that refuses the message rejects the send (the job then retries)', async () => {
    const config = testConfig({ MAIL_SMTP_URL: 'smtp://127.0.0.1:1', MAIL_TIMEOUT_MS: '2000' });
    const mailer = createMailer(config.mail, config.env, silent);
    await assert.rejects(
      mailer.send({ to: 'a@example.test', messageId: '<x@shipshape>', subject: 's', text: 't', html: 'h' }),
    );
    mailer.close();
  });
});

describe('mail without SMTP', () => {
  test('development prints the whole message (the catch-all), links included', async () => {
    const printed: string[] = [];
    const config = testConfig();
    const mailer = createMailer(config.mail, 'development', silent, (text) => printed.push(text));
    assert.equal(mailer.mode, 'print');
    await mailer.send({
      to: 'bob@example.test',
      messageId: '<job-2@shipshape>',
      ...renderMail({
        kind: 'verify-email',
        username: 'bob',
        link: 'http://localhost:3000/verify-email#token=t',
        hours: 48,
      }),
    });
    assert.equal(printed.length, 1);
    assert.match(printed[0] ?? '', /To: bob@example\.test/);
    assert.match(printed[0] ?? '', /Subject: Confirm your email address/);
    assert.match(printed[0] ?? '', /verify-email#token=t/);
  });

  test('production sends nothing, warns at start-up and prints nothing', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
    const printed: string[] = [];
    const config = testConfig();
    const mailer = createMailer(config.mail, 'production', logger, (text) => printed.push(text));
    assert.equal(mailer.mode, 'drop');
    await mailer.send({
      to: 'c@example.test',
      messageId: '<m@shipshape>',
      subject: 's',
      text: 'secret link',
      html: '',
    });
    assert.equal(printed.length, 0);
    assert.ok(lines.some((l) => l.includes('mail_not_configured')));
    assert.ok(!lines.some((l) => l.includes('secret link')));
  });
});

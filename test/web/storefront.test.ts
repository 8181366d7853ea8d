import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { inCi } from '../harness/services.js';
import { startSmtpServer, type TestSmtpServer } from '../harness/smtp.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp } from '../helper.js';
import { type Account, bearer, createAdmin, uniqueName } from '../support/accounts.js';

// The storefront and the operations page (web/, built into public/ by Vite) in Debian's Chromium,
// headless, driven by playwright-core: the flows a person uses, against the real service on a
// real port. Screenshots of every page go to test-results/storefront/ (set SCREENSHOTS_DIR to put
// them elsewhere, e.g. docs/screenshots for the README).

const root = new URL('../..', import.meta.url).pathname;
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const shots = process.env.SCREENSHOTS_DIR ?? join(root, 'test-results', 'storefront');

function skipWithoutChromium(): string | false {
  if (existsSync(chromiumPath)) return false;
  const message = `Chromium is not installed at ${chromiumPath}; sudo scripts/install-ops-tools.sh (Debian package chromium)`;
  if (inCi) throw new Error(`CI requires ${message}`);
  return message;
}

describe('storefront and operations page in Chromium', { skip: skipWithoutChromium() }, () => {
  let app: FastifyInstance;
  let base: string;
  let browser: Browser;
  let admin: Account;
  let smtp: TestSmtpServer;
  /** Every console error, page error and CSP violation, by page. */
  const problems: string[] = [];

  async function product(name: string, price: string, stock: number): Promise<{ id: string; sku: string }> {
    const sku = uniqueName('SKU').slice(-20).toUpperCase();
    const res = await app.inject({
      method: 'POST',
      url: '/api/products',
      headers: bearer(admin.accessToken),
      payload: { sku, name, price, stock },
    });
    assert.equal(res.statusCode, 201, res.body);
    return res.json();
  }

  async function stockOf(id: string): Promise<number> {
    return (await app.inject({ url: `/api/products/${id}` })).json().stock;
  }

  async function openPage(context?: BrowserContext, sink: string[] = problems): Promise<Page> {
    const ctx = context ?? (await browser.newContext({ viewport: { width: 1100, height: 800 } }));
    const page = await ctx.newPage();
    page.on('console', (message) => {
      // Chromium logs every 4xx/5xx fetch as a console error; those are judged by the response
      // listener below (a problem answer the page shows to the shopper is not an error).
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
        sink.push(`console: ${message.text()}`);
      }
    });
    page.on('response', (response) => {
      const url = new URL(response.url());
      const api = url.pathname.startsWith('/api/');
      if (response.status() >= 500 || (!api && response.status() >= 400)) {
        sink.push(`response: ${response.status()} ${url.pathname}`);
      }
    });
    page.on('pageerror', (error) => sink.push(`pageerror: ${error.message}`));
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (event) => {
        console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`);
      });
    });
    return page;
  }

  async function go(page: Page, hash: string): Promise<void> {
    await page.goto(`${base}/${hash}`);
    await page.waitForSelector('body[data-ready="true"]');
  }

  async function shot(page: Page, name: string): Promise<void> {
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  }

  async function registerInBrowser(page: Page, next = ''): Promise<string> {
    const name = uniqueName('shopper');
    await go(page, `#/register${next}`);
    await page.fill('input[name=email]', `${name}@example.com`);
    await page.fill('input[name=username]', name);
    await page.fill('input[name=password]', 'a long enough password');
    await page.click('button[type=submit]');
    await page.waitForSelector('#logout');
    return name;
  }

  async function ordersOf(
    username: string,
  ): Promise<Array<{ id: string; totalAmount: string; status: string }>> {
    const res = await app.inject({ url: '/api/orders?limit=100', headers: bearer(admin.accessToken) });
    const all = res.json().items as Array<{
      id: string;
      userId: string;
      totalAmount: string;
      status: string;
    }>;
    const users = await app.inject({ url: `/api/users?q=${username}`, headers: bearer(admin.accessToken) });
    const userId = users.json().items[0]?.id;
    return all.filter((o) => o.userId === userId);
  }

  before(async () => {
    const built = spawnSync(process.execPath, [join(root, 'scripts', 'ensure-build.mjs')], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.equal(built.status, 0, `building the storefront failed:\n${built.stderr}`);
    smtp = await startSmtpServer();
    app = await buildTestApp({
      env: {
        MAIL_SMTP_URL: smtp.url,
        PUBLIC_BASE_URL: 'https://shop.example.test',
        JOBS_POLL_INTERVAL_MS: '100',
        STATIC_DIR: join(root, 'public'),
        RATE_LIMIT_MAX: '100000',
        AUTH_RATE_LIMIT_MAX: '100000',
        LOGIN_MAX_FAILURES: '3',
      },
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    assert.ok(address && typeof address === 'object');
    base = `http://127.0.0.1:${address.port}`;
    admin = await createAdmin(app);
    browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      timeout: 120_000,
    });
  });

  after(async () => {
    await browser?.close();
    await app?.close();
    await smtp?.close();
  });

  test('purchase: browse → product → cart → register → checkout → the order in the history, stock lower', async () => {
    const lamp = await product(`Brass lamp ${uniqueName('')}`, '24.50', 10);
    const page = await openPage();
    await go(page, '#/');
    await shot(page, 'catalog');
    await page.fill('input[name=q]', lamp.sku);
    await page.click('form.filters button[type=submit]');
    await page.click(`li[data-product-id="${lamp.id}"] a.name`);
    await page.waitForSelector(`article.product[data-product-id="${lamp.id}"]`);
    await shot(page, 'product');
    await page.fill('input[name=quantity]', '2');
    await page.click('article.product button[type=submit]');
    await page.waitForSelector('#cart-link:has-text("Cart (2)")');
    await go(page, '#/cart');
    assert.equal(await page.textContent('#cart-total'), '49.00 USD');
    await page.click('a[href="#/register?next=cart"]');
    await page.waitForSelector('input[name=email]');
    const name = uniqueName('shopper');
    await page.fill('input[name=email]', `${name}@example.com`);
    await page.fill('input[name=username]', name);
    await page.fill('input[name=password]', 'a long enough password');
    await page.click('button[type=submit]');
    await page.waitForSelector('#checkout');
    await shot(page, 'cart');
    await page.click('#checkout');
    await page.waitForSelector('#order-status');
    assert.equal(await page.textContent('#order-total'), '49.00 USD');
    assert.equal(await page.textContent('#order-status'), 'pending');
    await shot(page, 'order');
    await go(page, '#/orders');
    await page.waitForSelector('#orders');
    assert.equal(await page.locator('#orders tbody tr').count(), 1);
    assert.equal(await page.textContent('#orders tbody tr td.total'), '49.00 USD');
    await shot(page, 'orders');
    assert.equal(await stockOf(lamp.id), 8);
    await go(page, `#/product/${lamp.id}`);
    await page.waitForSelector('article.product .stock:has-text("8 in stock")');
    await page.context().close();
  });

  test('a double-clicked checkout creates one order', async () => {
    const mug = await product(`Enamel mug ${uniqueName('')}`, '9.99', 50);
    const page = await openPage();
    const name = await registerInBrowser(page);
    await go(page, `#/product/${mug.id}`);
    await page.click('article.product button[type=submit]');
    await go(page, '#/cart');
    await page.dblclick('#checkout');
    await page.waitForSelector('#order-status');
    // A third, late click from another tab with the same cart would reuse the key too; here the
    // network must have seen at most one order creation.
    const orders = await ordersOf(name);
    assert.equal(orders.length, 1, JSON.stringify(orders));
    assert.equal(await stockOf(mug.id), 49);
    await page.context().close();
  });

  test('an admin changes a price on the operations page → the storefront shows it at once', async () => {
    const kettle = await product(`Kettle ${uniqueName('')}`, '30.00', 5);
    const shopper = await openPage();
    await go(shopper, `#/product/${kettle.id}`);
    assert.equal(await shopper.textContent('#price'), '30.00 USD');

    const ops = await openPage();
    await go(ops, '#/login');
    await ops.fill('input[name=login]', admin.username);
    await ops.fill('input[name=password]', admin.password);
    await ops.click('button[type=submit]');
    await ops.waitForSelector('#logout');
    await go(ops, '#/ops');
    const row = ops.locator(`tr[data-sku="${kettle.sku}"]`);
    await row.locator('input').first().fill('27.25');
    await row.locator('button:has-text("Save")').click();
    await ops.waitForSelector('.flash.info:has-text("Saved")');

    await shopper.reload();
    await shopper.waitForSelector('body[data-ready="true"]');
    assert.equal(await shopper.textContent('#price'), '27.25 USD');
    await shopper.context().close();
    await ops.context().close();
  });

  test('log out: the back button and a reload show no private data, and the refresh cookie is gone', async () => {
    const page = await openPage();
    const name = await registerInBrowser(page);
    const cookiesBefore = await page.context().cookies();
    assert.ok(
      cookiesBefore.some((c) => c.name === '__Secure-refresh-token' && c.httpOnly),
      'the refresh token is an HttpOnly cookie',
    );
    await go(page, '#/orders');
    await page.waitForSelector('h1:has-text("Your orders")');
    await page.click('#logout');
    await page.waitForSelector('#login-link');
    const cookiesAfter = await page.context().cookies();
    assert.ok(!cookiesAfter.some((c) => c.name === '__Secure-refresh-token'), 'refresh cookie cleared');
    await page.goBack();
    await page.waitForSelector('main h1');
    assert.ok(!(await page.content()).includes('Your orders'), 'back shows no order history');
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    assert.ok(await page.isVisible('#login-link'));
    assert.ok(!(await page.content()).includes(name), 'no trace of the user after a reload');
    await page.context().close();
  });

  test('out of stock and a locked account show the right message', async () => {
    const last = await product(`Last one ${uniqueName('')}`, '5.00', 1);
    const page = await openPage();
    await registerInBrowser(page);
    await go(page, `#/product/${last.id}`);
    await page.fill('input[name=quantity]', '3');
    await page.click('article.product button[type=submit]');
    await go(page, '#/cart');
    await page.click('#checkout');
    await page.waitForSelector('.flash.error');
    assert.match((await page.textContent('.flash.error')) ?? '', /Not enough stock/);
    await shot(page, 'out-of-stock');
    await page.context().close();

    const victim = await openPage();
    const name = await registerInBrowser(victim);
    await victim.click('#logout');
    await victim.waitForSelector('#login-link');
    await go(victim, '#/login');
    for (let attempt = 0; attempt < 4; attempt++) {
      await victim.fill('input[name=login]', name);
      await victim.fill('input[name=password]', `wrong password ${attempt}`);
      await victim.click('button[type=submit]');
      await victim.waitForSelector('.flash.error');
      if (/locked/.test((await victim.textContent('.flash.error')) ?? '')) break;
      await victim.evaluate(() => document.getElementById('flash')?.replaceChildren());
    }
    assert.match((await victim.textContent('.flash.error')) ?? '', /locked/);
    await shot(victim, 'locked');
    await victim.context().close();
  });

  test("the operations page's charts move while a load generator runs", async () => {
    const page = await openPage();
    await go(page, '#/login');
    await page.fill('input[name=login]', admin.username);
    await page.fill('input[name=password]', admin.password);
    await page.click('button[type=submit]');
    await page.waitForSelector('#logout');
    await go(page, '#/ops');
    await page.waitForSelector('#chart-rate');
    const item = await product(`Load item ${uniqueName('')}`, '1.00', 10);
    let running = true;
    const load = (async () => {
      while (running) {
        await Promise.all(
          Array.from({ length: 10 }, () =>
            fetch(`${base}/api/products/${item.id}`).then((r) => r.arrayBuffer()),
          ),
        );
      }
    })();
    try {
      await waitUntil(
        async () => {
          const points = Number(await page.getAttribute('#chart-rate', 'data-points'));
          const last = Number(await page.getAttribute('#chart-rate', 'data-last'));
          return points >= 3 && last > 1;
        },
        { timeoutMs: 60_000, intervalMs: 250, what: 'the request-rate chart shows the load' },
      );
      const hit = Number(await page.getAttribute('#chart-cache', 'data-last'));
      assert.ok(hit > 0.5, `cache hit ratio under repeated reads: ${hit}`);
      assert.equal(await page.textContent('dd[data-check="Status"]'), 'ready');
      await shot(page, 'operations');
    } finally {
      running = false;
      await load;
    }
    await page.context().close();
  });

  test('the mailed links open storefront pages: verify the address, reset a forgotten password', async () => {
    const page = await openPage();
    const name = await registerInBrowser(page);
    const email = `${name}@example.com`;
    const linkIn = async (subject: RegExp, since = 0) => {
      const mail = await smtp.waitForMail(email, { subject, since, timeoutMs: 60_000 });
      const match = /https:\/\/shop\.example\.test(\/#\/[a-z-]+\?token=[A-Za-z0-9_-]+)/.exec(mail.text);
      assert.ok(match?.[1], mail.text);
      return `${base}${match[1]}`;
    };
    await page.goto(await linkIn(/confirm your email/i));
    await page.waitForSelector('#verify-result');
    assert.match((await page.textContent('#verify-result')) ?? '', /verified/);

    await page.click('#logout');
    await page.waitForSelector('#login-link');
    await go(page, '#/login');
    await page.click('#forgot');
    await page.fill('input[name=email]', email);
    const before = smtp.received.length;
    await page.click('button[type=submit]');
    await page.waitForSelector('.flash.info');
    assert.match((await page.textContent('.flash.info')) ?? '', /If an account uses that address/);
    await page.goto(await linkIn(/password/i, before));
    await page.waitForSelector('input[name=newPassword]');
    await page.fill('input[name=newPassword]', 'a brand new password');
    await page.fill('input[name=again]', 'a brand new password');
    await page.click('button[type=submit]');
    await page.waitForSelector('.flash.info:has-text("password is changed")');
    await shot(page, 'password-reset');
    await page.fill('input[name=login]', name);
    await page.fill('input[name=password]', 'a brand new password');
    await page.click('button[type=submit]');
    await page.waitForSelector('#logout');
    await page.context().close();
  });

  test('the watch catches a CSP violation (so the check below means something)', async () => {
    const seen: string[] = [];
    const page = await openPage(undefined, seen);
    await go(page, '#/');
    await page.evaluate(() => {
      const script = document.createElement('script');
      script.textContent = 'window.injected = true';
      document.head.append(script);
    });
    await waitUntil(() => seen.some((p) => p.includes('CSP violation: script-src')), {
      what: 'the inline script is refused and reported',
    });
    assert.equal(await page.evaluate(() => (window as { injected?: boolean }).injected), undefined);
    await page.context().close();
  });

  test('no console errors and no CSP violations on any page', () => {
    assert.deepEqual(problems, []);
  });

  test('a phone-sized screen: the catalog and the cart fit without sideways scrolling', async () => {
    const context = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true });
    const page = await openPage(context);
    for (const hash of ['#/', '#/cart', '#/login']) {
      await go(page, hash);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${hash} overflows by ${overflow}px`);
    }
    await shot(page, 'phone-catalog');
    await context.close();
    assert.deepEqual(problems, []);
  });
});

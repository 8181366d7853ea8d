// The storefront and the operations page: one HTML file, hash routes (so the service and nginx
// serve nothing but static files), and the API through the typed client.
import { logout, onSessionChange, restoreSession, user } from './api.js';
import * as cart from './cart.js';
import { flash, h } from './dom.js';
import {
  forgotPasswordPage,
  loginPage,
  registerPage,
  resetPasswordPage,
  verifyEmailPage,
} from './pages/account.js';
import { leaveOps, opsPage } from './pages/ops.js';
import { orderPage, ordersPage } from './pages/orders.js';
import { cartPage, catalogPage, productPage } from './pages/shop.js';

function renderNav(): void {
  const nav = document.getElementById('nav') as HTMLElement;
  const who = user();
  const links: (HTMLElement | null)[] = [
    h('a', { href: '#/' }, 'Catalog'),
    h('a', { href: '#/cart', id: 'cart-link' }, `Cart (${cart.count()})`),
    who ? h('a', { href: '#/orders' }, 'Orders') : null,
    who?.role === 'admin' ? h('a', { href: '#/ops' }, 'Operations') : null,
    who
      ? h(
          'button',
          {
            type: 'button',
            class: 'link',
            id: 'logout',
            onclick: async () => {
              await logout();
              flash('You are logged out.', 'info');
              location.hash = '#/';
            },
          },
          `Log out ${who.username}`,
        )
      : h('a', { href: '#/login', id: 'login-link' }, 'Log in'),
  ];
  nav.replaceChildren(...links.filter((link): link is HTMLElement => link !== null));
}

async function route(): Promise<void> {
  leaveOps();
  const [path = '/', query = ''] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query);
  const parts = path.split('/').filter(Boolean);
  switch (parts[0]) {
    case undefined:
      return catalogPage(params);
    case 'product':
      return productPage(parts[1] ?? '');
    case 'cart':
      return cartPage();
    case 'login':
      return loginPage(params);
    case 'register':
      return registerPage(params);
    case 'forgot-password':
      return forgotPasswordPage();
    case 'reset-password':
      return resetPasswordPage(params);
    case 'verify-email':
      return verifyEmailPage(params);
    case 'orders':
      return parts[1] ? orderPage(parts[1]) : ordersPage();
    case 'ops':
      return opsPage();
    default:
      location.hash = '#/';
  }
}

onSessionChange(renderNav);
cart.onCartChange(renderNav);
window.addEventListener('hashchange', () => {
  flash('');
  void route();
});
// Another tab changed the cart.
window.addEventListener('storage', renderNav);

renderNav();
await restoreSession();
await route();
document.body.dataset.ready = 'true';

import { api, describe, login, type Problem, problemOf, register } from '../api.js';
import { field, flash, form, h, show } from '../dom.js';

function after(params: URLSearchParams): string {
  return params.get('next') === 'cart' ? '#/cart' : '#/';
}

/** After a login or registration: the problem in the flash box, or on to where the visitor was going. */
function signedIn(problem: Problem | undefined, params: URLSearchParams): void {
  if (problem) {
    flash(describe(problem));
    return;
  }
  flash('');
  location.hash = after(params);
}

export function loginPage(params: URLSearchParams): void {
  const name = h('input', { name: 'login', autocomplete: 'username', required: true });
  const password = h('input', {
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Log in');
  show(
    h('h1', {}, 'Log in'),
    form(
      submit,
      async () => signedIn(await login(name.value, password.value), params),
      field('Email or username', name),
      field('Password', password),
    ),
    h('p', {}, 'New here? ', h('a', { href: `#/register?${params}` }, 'Create an account')),
    h('p', {}, h('a', { href: '#/forgot-password', id: 'forgot' }, 'Forgot your password?')),
  );
}

export function registerPage(params: URLSearchParams): void {
  const email = h('input', { name: 'email', type: 'email', autocomplete: 'email', required: true });
  const username = h('input', { name: 'username', autocomplete: 'username', required: true });
  const password = h('input', {
    name: 'password',
    type: 'password',
    autocomplete: 'new-password',
    minlength: 8,
    required: true,
  });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create account');
  show(
    h('h1', {}, 'Create an account'),
    form(
      submit,
      async () => signedIn(await register(email.value, username.value, password.value), params),
      field('Email', email),
      field('Username', username),
      field('Password (8 characters or more)', password),
    ),
  );
}

export function forgotPasswordPage(): void {
  const email = h('input', { name: 'email', type: 'email', autocomplete: 'email', required: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Mail me a link');
  show(
    h('h1', {}, 'Forgot your password?'),
    form(
      submit,
      async () => {
        const { error, response } = await api.POST('/api/auth/password-reset', {
          body: { email: email.value },
        });
        // The API answers 202 whatever the address, so the page says the same to everyone.
        if (response.status === 202)
          flash('If an account uses that address, a link to set a new password is on its way.', 'info');
        else flash(describe(problemOf(error, response)));
      },
      field('Email', email),
    ),
  );
}

export function resetPasswordPage(params: URLSearchParams): void {
  const token = params.get('token') ?? '';
  const password = h('input', {
    name: 'newPassword',
    type: 'password',
    autocomplete: 'new-password',
    minlength: 8,
    required: true,
  });
  const again = h('input', { name: 'again', type: 'password', autocomplete: 'new-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Set the new password');
  show(
    h('h1', {}, 'Set a new password'),
    form(
      submit,
      async () => {
        if (password.value !== again.value) {
          flash('The two passwords differ.');
          return;
        }
        const { error, response } = await api.POST('/api/auth/password-reset/confirm', {
          body: { token, newPassword: password.value },
        });
        if (response.status !== 204) {
          flash(describe(problemOf(error, response)));
          return;
        }
        // Every session ended with the reset, this browser's too.
        history.replaceState(null, '', '#/login');
        loginPage(new URLSearchParams());
        flash('Your password is changed, and every session is signed out. Log in with the new one.', 'info');
      },
      field('New password (8 characters or more)', password),
      field('The same again', again),
    ),
  );
}

export async function verifyEmailPage(params: URLSearchParams): Promise<void> {
  const { error, response } = await api.POST('/api/auth/verify-email', {
    body: { token: params.get('token') ?? '' },
  });
  show(
    h('h1', {}, 'Email address'),
    h(
      'p',
      { id: 'verify-result' },
      response.status === 204
        ? 'Thank you: your email address is verified.'
        : describe(problemOf(error, response)),
    ),
    h('a', { href: '#/' }, 'Back to the shop'),
  );
}

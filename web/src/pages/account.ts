import { describe, login, register } from '../api.js';
import { field, flash, h, show } from '../dom.js';

function after(params: URLSearchParams): string {
  return params.get('next') === 'cart' ? '#/cart' : '#/';
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
    h(
      'form',
      {
        class: 'stack',
        onsubmit: async (event: Event) => {
          event.preventDefault();
          submit.disabled = true;
          const problem = await login(name.value, password.value);
          submit.disabled = false;
          if (problem) {
            flash(describe(problem));
            return;
          }
          flash('');
          location.hash = after(params);
        },
      },
      field('Email or username', name),
      field('Password', password),
      submit,
    ),
    h('p', {}, 'New here? ', h('a', { href: `#/register?${params}` }, 'Create an account')),
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
    h(
      'form',
      {
        class: 'stack',
        onsubmit: async (event: Event) => {
          event.preventDefault();
          submit.disabled = true;
          const problem = await register(email.value, username.value, password.value);
          submit.disabled = false;
          if (problem) {
            flash(describe(problem));
            return;
          }
          flash('');
          location.hash = after(params);
        },
      },
      field('Email', email),
      field('Username', username),
      field('Password (8 characters or more)', password),
      submit,
    ),
  );
}

// A few lines instead of a framework: h() builds elements from tags, properties and children. No
// innerHTML anywhere, so text from the API can never become markup (and the CSP needs no
// 'unsafe-inline' for scripts).
type Child = Node | string | number | false | null | undefined;
type Props = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replaces the main region's content and moves focus there (keyboard and screen-reader users). */
export function show(...children: Node[]): void {
  const main = document.getElementById('main') as HTMLElement;
  main.replaceChildren(...children);
  main.focus({ preventScroll: true });
}

export function flash(message: string, kind: 'error' | 'info' = 'error'): void {
  const box = document.getElementById('flash') as HTMLElement;
  box.replaceChildren(message ? h('p', { class: `flash ${kind}`, 'data-kind': kind }, message) : '');
}

export function money(amount: string, currency: string): string {
  return `${amount} ${currency}`;
}

export function field(label: string, input: HTMLInputElement): HTMLLabelElement {
  return h('label', {}, h('span', {}, label), input);
}

/**
 * A form whose submit button stays disabled while `action` runs (no double submit from an
 * impatient click), with the default navigation prevented. `action` may throw: the button comes back.
 */
export function form(
  submit: HTMLButtonElement,
  action: () => Promise<void>,
  ...fields: Node[]
): HTMLFormElement {
  return h(
    'form',
    {
      class: 'stack',
      onsubmit: async (event: Event) => {
        event.preventDefault();
        submit.disabled = true;
        try {
          await action();
        } finally {
          submit.disabled = false;
        }
      },
    },
    ...fields,
    submit,
  );
}

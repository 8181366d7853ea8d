/**
 * The mails the service sends, each as plain text and HTML from one set of values. Every value that
 * reaches the HTML is escaped; links are built by the caller from PUBLIC_BASE_URL and carry their
 * token in the fragment (`#token=…`), which browsers never send to a server or in a Referer.
 */

export interface RenderedMail {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

export type MailTemplate =
  | {
      readonly kind: 'password-reset';
      readonly username: string;
      readonly link: string;
      readonly minutes: number;
    }
  | {
      readonly kind: 'verify-email';
      readonly username: string;
      readonly link: string;
      readonly hours: number;
    }
  | { readonly kind: 'password-changed'; readonly username: string };

const entities: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => entities[c] ?? c);
}

function html(
  title: string,
  paragraphs: readonly string[],
  action?: { label: string; href: string },
): string {
  const button =
    action === undefined
      ? ''
      : `<p><a href="${escapeHtml(action.href)}" style="display:inline-block;padding:10px 16px;background:#1f4fd1;color:#fff;text-decoration:none;border-radius:4px">${escapeHtml(action.label)}</a></p>\n<p style="font-size:12px;color:#555">Or paste this address into your browser: ${escapeHtml(action.href)}</p>\n`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body style="font-family:sans-serif;line-height:1.5;color:#111">
${paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join('\n')}
${button}<p style="font-size:12px;color:#555">Shipshape</p>
</body></html>
`;
}

export function renderMail(template: MailTemplate): RenderedMail {
  switch (template.kind) {
    case 'password-reset': {
      const subject = 'Reset your Shipshape password';
      const intro = [
        `Hello ${template.username},`,
        `Someone (hopefully you) asked to reset the password of your account. The link works once, for ${template.minutes} minutes.`,
      ];
      const outro = 'If you did not ask for this, ignore this mail: your password stays as it is.';
      return {
        subject,
        text: `${intro.join('\n\n')}\n\n${template.link}\n\n${outro}\n`,
        html: html(subject, [...intro, outro], { label: 'Choose a new password', href: template.link }),
      };
    }
    case 'verify-email': {
      const subject = 'Confirm your email address';
      const intro = [
        `Hello ${template.username},`,
        `Please confirm that this address belongs to your Shipshape account. The link works once, for ${template.hours} hours.`,
      ];
      const outro = 'If you did not create an account or change its address, ignore this mail.';
      return {
        subject,
        text: `${intro.join('\n\n')}\n\n${template.link}\n\n${outro}\n`,
        html: html(subject, [...intro, outro], { label: 'Confirm the address', href: template.link }),
      };
    }
    case 'password-changed': {
      const subject = 'Your Shipshape password was changed';
      const lines = [
        `Hello ${template.username},`,
        'The password of your account was just reset, and every session was signed out.',
        'If this was not you, reset it again at once and contact support.',
      ];
      return { subject, text: `${lines.join('\n\n')}\n`, html: html(subject, lines) };
    }
  }
}

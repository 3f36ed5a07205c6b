import type { Response } from 'express';

const ORIGIN = /^https?:\/\/[a-z0-9.-]+(?::\d{1,5})?$|^https?:\/\/\[[0-9a-f:.]+\](?::\d{1,5})?$/;

/** Replaces one directive of the response's Content-Security-Policy (set for every response by helmet). */
function setDirective(res: Response, name: string, sources: readonly string[]): void {
  const policy = res.getHeader('Content-Security-Policy');
  const directives = (typeof policy === 'string' ? policy : "default-src 'self'")
    .split(';')
    .map((directive) => directive.trim())
    .filter((directive) => directive && directive.split(/\s+/)[0]!.toLowerCase() !== name);
  directives.push([name, ...sources].join(' '));
  res.setHeader('Content-Security-Policy', directives.join(';'));
}

/**
 * Who may show a response in a frame. Every response starts with `frame-ancestors 'none'` and `X-Frame-Options: DENY`
 * (bootstrap.ts); a response for a tenant that registered `frameAncestors` (its session's pages, its launch and
 * callback) is opened to `'self'` and those origins, and loses X-Frame-Options (it cannot list origins, and a browser
 * that knows CSP ignores it then anyway). The origins were validated when the tenant was registered; anything that is
 * not a plain origin is still left out here, so nothing else can enter the header.
 * @see https://www.w3.org/TR/CSP3/#directive-frame-ancestors
 */
export function allowFraming(res: Response, origins: readonly string[]): void {
  const allowed = origins.filter((origin) => ORIGIN.test(origin));
  if (allowed.length === 0 || res.headersSent) return;
  setDirective(res, 'frame-ancestors', ["'self'", ...allowed]);
  res.removeHeader('X-Frame-Options');
}

/**
 * Lets a page's forms lead to `origin` besides our own (`form-action`, `'self'` by default): browsers apply it to the
 * redirects a form submission is answered with, so a form whose answer sends the browser on to the EHR's authorization
 * endpoint (the disclosure authorization) needs that endpoint's origin here.
 * @see https://www.w3.org/TR/CSP3/#directive-form-action
 */
export function allowFormTarget(res: Response, origin: string | undefined): void {
  if (!origin || !ORIGIN.test(origin) || res.headersSent) return;
  setDirective(res, 'form-action', ["'self'", origin]);
}

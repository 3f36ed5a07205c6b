/**
 * A minimal browser for e2e tests over real HTTP: keeps cookies per host, follows redirects by hand, and records
 * every response it received (so a test can assert what a browser would have seen, e.g. that no token ever
 * reached it). Pages that need rendering or clicking use the real chromium tests instead.
 */
export interface SeenResponse {
  url: string;
  status: number;
  headers: Record<string, string>;
  setCookies: string[];
  body: string;
}

export class TestBrowser {
  private readonly jar = new Map<string, Map<string, string>>();
  readonly seen: SeenResponse[] = [];

  cookie(host: string, name: string): string | undefined {
    return this.jar.get(host)?.get(name);
  }

  setCookie(host: string, name: string, value: string): void {
    if (!this.jar.has(host)) this.jar.set(host, new Map());
    this.jar.get(host)!.set(name, value);
  }

  /** One request, no redirect following. */
  async request(url: string, init: RequestInit = {}): Promise<SeenResponse> {
    const target = new URL(url);
    const headers = new Headers(init.headers);
    const cookies = this.jar.get(target.host);
    if (cookies && cookies.size > 0) headers.set('cookie', [...cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    const response = await fetch(target, { ...init, headers, redirect: 'manual' });
    const setCookies = response.headers.getSetCookie();
    for (const line of setCookies) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = attributes.some((a) => /^\s*(max-age=0|expires=thu, 01 jan 1970)/i.test(a));
      if (!this.jar.has(target.host)) this.jar.set(target.host, new Map());
      if (expired || value === '') this.jar.get(target.host)!.delete(name);
      else this.jar.get(target.host)!.set(name, value);
    }
    const seen: SeenResponse = {
      url: target.toString(),
      status: response.status,
      headers: Object.fromEntries(response.headers),
      setCookies,
      body: await response.text(),
    };
    this.seen.push(seen);
    return seen;
  }

  /** GET (or the given request) and follow redirects until a non-redirect answer; returns all hops. */
  async navigate(url: string, init: RequestInit = {}, maxHops = 20): Promise<SeenResponse[]> {
    const hops: SeenResponse[] = [];
    let next: string | undefined = url;
    let nextInit = init;
    while (next && hops.length < maxHops) {
      const response = await this.request(next, nextInit);
      hops.push(response);
      const location = response.headers['location'];
      if (response.status >= 300 && response.status < 400 && location) {
        next = new URL(location, next).toString();
        // 303 (and 301/302 after POST, as browsers do) turn into GET.
        if (
          response.status === 303 ||
          ((response.status === 301 || response.status === 302) && nextInit.method === 'POST')
        ) {
          nextInit = {};
        }
      } else {
        next = undefined;
      }
    }
    return hops;
  }
}

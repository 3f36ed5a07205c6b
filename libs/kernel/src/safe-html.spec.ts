import { describe, expect, it } from 'vitest';
import { html } from './safe-html.js';

describe('html template', () => {
  it('escapes interpolated values, including inside attributes', () => {
    const name = `<script>alert("x")</script>&'`;
    expect(html`<p title="${name}">${name}</p>`.value).toBe(
      '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;</p>',
    );
  });

  it('nests fragments without double escaping, and renders null as empty', () => {
    const items = ['a<b', 'c'].map((v) => html`<li>${v}</li>`);
    expect(html`<ul>${items}</ul>${null}`.value).toBe('<ul><li>a&lt;b</li><li>c</li></ul>');
  });
});

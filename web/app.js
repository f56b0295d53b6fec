/*
 * app.js - the deepseek.c web chat. Plain browser JavaScript, no build step.
 *
 * Talks to the server's own OpenAI-compatible API (POST /v1/chat/completions
 * with stream: true), keeps conversations in localStorage, renders Markdown
 * (marked), code highlighting (highlight.js) and math (KaTeX) when those
 * libraries loaded from /vendor/, and falls back to a small escaped renderer
 * when they did not. Model output is never trusted as HTML: raw HTML in
 * Markdown is escaped and the result passes a whitelist sanitizer.
 */
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = { convs: 'dsc.conversations', cur: 'dsc.current', set: 'dsc.settings' };

  const load = (k, d) => { try { const v = JSON.parse(localStorage.getItem(k)); return v == null ? d : v; } catch (e) { return d; } };
  let convs = load(KEY.convs, []);
  let cur = localStorage.getItem(KEY.cur) || null;
  const settings = Object.assign({ apiKey: '', system: '', temperature: '', maxTokens: '', extra: '', deepthink: false },
                                 load(KEY.set, {}));
  let props = null;
  let busy = null; // { ctl, msg }

  /* ------------------------------------------------------------ storage */

  function save() {
    try {
      localStorage.setItem(KEY.convs, JSON.stringify(convs, (k, v) => (k[0] === '_' ? undefined : v)));
      localStorage.setItem(KEY.cur, cur || '');
    } catch (e) {
      showError('Could not save the conversation in this browser: ' + e.message);
    }
  }
  const conv = () => convs.find((c) => c.id === cur) || null;
  function newConv() {
    const c = { id: 'c' + Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: '', messages: [], updated: Date.now() };
    convs.unshift(c);
    cur = c.id;
    return c;
  }

  /* ----------------------------------------------------------- markdown */

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

  function inlineFallback(s) {
    return esc(s).replace(/`([^`]+)`/g, '<code>$1</code>').replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>').replace(/\n/g, '<br>');
  }
  /* Without marked: code fences, inline code, bold, paragraphs; everything else is escaped text. */
  function markdownFallback(src) {
    let out = '', inCode = false, lang = '', buf = [];
    const para = () => { if (buf.length) { out += '<p>' + inlineFallback(buf.join('\n')) + '</p>'; buf = []; } };
    for (const line of src.split('\n')) {
      const m = line.match(/^\s*```\s*([\w+#.-]*)/);
      if (m) {
        if (inCode) {
          out += '<pre><code' + (lang ? ' class="language-' + esc(lang) + '"' : '') + '>' + esc(buf.join('\n')) + '</code></pre>';
          buf = [];
          inCode = false;
        } else {
          para();
          inCode = true;
          lang = m[1];
        }
        continue;
      }
      if (inCode) { buf.push(line); continue; }
      if (!line.trim()) { para(); continue; }
      buf.push(line);
    }
    if (inCode) out += '<pre><code>' + esc(buf.join('\n')) + '</code></pre>';
    else para();
    return out;
  }

  let mdRenderer = null;
  function markedOptions() {
    if (!mdRenderer) {
      mdRenderer = new window.marked.Renderer();
      mdRenderer.html = (html) => esc(typeof html === 'object' ? html.text : html); /* raw HTML shows as text */
      mdRenderer.image = (href, title, text) => esc(typeof href === 'object' ? href.text : text || '');
    }
    return { renderer: mdRenderer, mangle: false, headerIds: false, gfm: true, breaks: false };
  }

  const ALLOWED = new Set(['P', 'BR', 'STRONG', 'EM', 'B', 'I', 'CODE', 'PRE', 'UL', 'OL', 'LI', 'BLOCKQUOTE', 'H1', 'H2', 'H3',
    'H4', 'H5', 'H6', 'TABLE', 'THEAD', 'TBODY', 'TR', 'TH', 'TD', 'A', 'HR', 'DEL', 'S', 'SPAN', 'DIV', 'SUP', 'SUB', 'INPUT']);
  /* Whitelist sanitizer: unknown elements become their own text, attributes are dropped except safe ones. */
  function sanitize(html) {
    const t = document.createElement('template');
    t.innerHTML = html; /* template content is inert: no scripts run, no images load */
    const walk = (node) => {
      for (const el of Array.from(node.children)) {
        if (!ALLOWED.has(el.tagName) || (el.tagName === 'INPUT' && el.getAttribute('type') !== 'checkbox')) {
          el.replaceWith(document.createTextNode(el.outerHTML));
          continue;
        }
        for (const a of Array.from(el.attributes)) {
          const n = a.name.toLowerCase();
          const ok = (n === 'href' && el.tagName === 'A' && /^(https?:|mailto:|#)/i.test(a.value.trim())) ||
                     (n === 'class' && /^(language-[\w+#.-]+|hljs[\w -]*)$/.test(a.value)) || n === 'title' || n === 'align' ||
                     (el.tagName === 'INPUT' && (n === 'type' || n === 'checked' || n === 'disabled'));
          if (!ok) el.removeAttribute(a.name);
        }
        if (el.tagName === 'A') { el.setAttribute('target', '_blank'); el.setAttribute('rel', 'noopener noreferrer'); }
        walk(el);
      }
    };
    walk(t.content);
    return t.content;
  }

  function copyText(text, btn) {
    const done = (ok) => {
      if (!btn) return;
      const old = btn.dataset.label || btn.textContent;
      btn.dataset.label = old;
      btn.textContent = ok ? 'Copied' : 'Copy failed';
      setTimeout(() => { btn.textContent = old; }, 1500);
    };
    const fallback = () => {
      const ta = document.createElement('textarea');
      ta.value = text;
      ta.style.position = 'fixed';
      ta.style.opacity = '0';
      document.body.appendChild(ta);
      ta.select();
      let ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      ta.remove();
      done(ok);
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(() => done(true), fallback);
    else fallback();
  }

  /* Math is cut out before Markdown (so _ and * inside it survive) and put back as text for KaTeX. */
  function renderMarkdown(el, src) {
    const math = [];
    const segs = src.split(/(```[\s\S]*?(?:```|$)|`[^`\n]*`)/);
    for (let i = 0; i < segs.length; i += 2)
      segs[i] = segs[i].replace(/\$\$[\s\S]+?\$\$|\\\[[\s\S]+?\\\]|\\\([\s\S]+?\\\)|\$[^$\n]+?\$/g, (m) => { math.push(m); return '%%MATH' + (math.length - 1) + '%%'; });
    const s = segs.join('');
    let html;
    try { html = window.marked ? window.marked.parse(s, markedOptions()) : markdownFallback(s); } catch (e) { html = markdownFallback(s); }
    html = html.replace(/%%MATH(\d+)%%/g, (_, i) => esc(math[+i]));
    el.replaceChildren(sanitize(html));
    el.querySelectorAll('pre > code').forEach((code) => {
      if (window.hljs) {
        try { (window.hljs.highlightElement || window.hljs.highlightBlock).call(window.hljs, code); } catch (e) { /* plain */ }
      }
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'copy-code';
      b.textContent = 'Copy';
      b.addEventListener('click', () => copyText(code.textContent, b));
      code.parentElement.appendChild(b);
    });
    if (window.renderMathInElement && math.length) {
      try {
        window.renderMathInElement(el, {
          delimiters: [{ left: '$$', right: '$$', display: true }, { left: '\\[', right: '\\]', display: true },
                       { left: '\\(', right: '\\)', display: false }, { left: '$', right: '$', display: false }],
          throwOnError: false, ignoredTags: ['script', 'noscript', 'style', 'textarea', 'pre', 'code'],
        });
      } catch (e) { /* leave the TeX as text */ }
    }
  }

  /* ------------------------------------------------------------- render */

  function showError(text) {
    const e = $('error');
    e.textContent = text || '';
    e.hidden = !text;
  }

  function renderList() {
    const ul = $('conv-list');
    ul.replaceChildren();
    for (const c of convs) {
      const li = document.createElement('li');
      li.className = c.id === cur ? 'active' : '';
      li.dataset.id = c.id;
      const t = document.createElement('span');
      t.className = 'title';
      t.textContent = c.title || 'New chat';
      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'del';
      del.title = 'Delete this chat';
      del.textContent = '×';
      del.addEventListener('click', (ev) => {
        ev.stopPropagation();
        if (busy) return;
        convs = convs.filter((x) => x.id !== c.id);
        if (cur === c.id) cur = convs.length ? convs[0].id : null;
        save();
        renderAll();
      });
      li.append(t, del);
      li.addEventListener('click', () => { if (!busy) { cur = c.id; save(); renderAll(); } });
      ul.appendChild(li);
    }
  }

  function usageText(m) {
    const u = m.usage;
    if (!u) return '';
    const cached = u.prompt_cache_hit_tokens != null ? u.prompt_cache_hit_tokens : (u.prompt_tokens_details || {}).cached_tokens || 0;
    let s = `${u.prompt_tokens} prompt (${cached} cached) + ${u.completion_tokens} completion tokens`;
    const r = (u.completion_tokens_details || {}).reasoning_tokens;
    if (r) s += `, ${r} reasoning`;
    if (m.tps) s += ` · ${m.tps.toFixed(1)} tokens/s`;
    return s;
  }

  function button(label, cls, fn) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = cls;
    b.textContent = label;
    b.addEventListener('click', fn);
    return b;
  }

  function renderMessage(m, idx, c) {
    let div = m._el;
    if (!div) {
      div = document.createElement('div');
      m._el = div;
    }
    const last = idx === c.messages.length - 1;
    div.className = 'msg ' + m.role + (busy && busy.msg === m ? ' streaming' : '');
    div.dataset.role = m.role;
    div.dataset.state = busy && busy.msg === m ? 'streaming' : m.error ? 'error' : m.stopped ? 'stopped' : 'done';
    div.replaceChildren();
    const who = document.createElement('div');
    who.className = 'who';
    who.textContent = m.role === 'user' ? 'You' : 'Assistant';
    div.appendChild(who);
    if (m.role === 'assistant' && (m.reasoning || m.thinking)) {
      const d = document.createElement('details');
      d.className = 'reasoning';
      d.open = m._open != null ? m._open : !m.content;
      d.addEventListener('toggle', () => { m._open = d.open; });
      const s = document.createElement('summary');
      s.textContent = m.content || !(busy && busy.msg === m) ? 'Thought' : 'Thinking…';
      const b = document.createElement('div');
      b.className = 'reasoning-body';
      b.textContent = m.reasoning || '';
      d.append(s, b);
      div.appendChild(d);
    }
    const body = document.createElement('div');
    body.className = 'body';
    if (m._editing) {
      const ta = document.createElement('textarea');
      ta.className = 'edit-box';
      ta.rows = 4;
      ta.value = m.content;
      body.appendChild(ta);
      const acts = document.createElement('div');
      acts.className = 'actions';
      acts.append(button('Save & send', 'btn-save', () => {
        m.content = ta.value;
        m._editing = false;
        c.messages.splice(idx + 1);
        const a = { role: 'assistant', content: '', reasoning: '', thinking: settings.deepthink };
        c.messages.push(a);
        save();
        generate(c, a);
      }), button('Cancel', 'btn-cancel', () => { m._editing = false; renderAll(); }));
      div.append(body, acts);
      return div;
    }
    if (m.role === 'user') body.textContent = m.content;
    else renderMarkdown(body, m.content || '');
    div.appendChild(body);
    if (m.tool_calls && m.tool_calls.length) {
      const pre = document.createElement('pre');
      pre.className = 'tool-calls';
      pre.textContent = m.tool_calls.map((t) => `${t.name}(${t.arguments})`).join('\n');
      div.appendChild(pre);
    }
    if (m.error) {
      const e = document.createElement('div');
      e.className = 'err';
      e.textContent = m.error;
      div.appendChild(e);
    }
    if (!(busy && busy.msg === m)) {
      const acts = document.createElement('div');
      acts.className = 'actions';
      acts.appendChild(button('Copy', 'btn-copy', (ev) => copyText(m.content, ev.target)));
      if (m.role === 'user') acts.appendChild(button('Edit', 'btn-edit', () => { if (!busy) { m._editing = true; renderAll(); } }));
      if (m.role === 'assistant' && last) acts.appendChild(button('Regenerate', 'btn-regen', () => regenerate(c)));
      if (m.stopped) {
        const s = document.createElement('span');
        s.className = 'meta';
        s.textContent = 'stopped';
        acts.appendChild(s);
      }
      const meta = document.createElement('span');
      meta.className = 'meta usage';
      meta.textContent = usageText(m);
      acts.appendChild(meta);
      div.appendChild(acts);
    }
    return div;
  }

  function renderMessages() {
    const box = $('messages');
    const c = conv();
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    box.replaceChildren();
    if (!c || !c.messages.length) {
      const e = document.createElement('div');
      e.className = 'empty';
      e.textContent = 'Ask anything. Conversations stay in this browser.';
      box.appendChild(e);
      return;
    }
    c.messages.forEach((m, i) => box.appendChild(renderMessage(m, i, c)));
    if (atBottom || busy) box.scrollTop = box.scrollHeight;
  }

  function renderAll() {
    renderList();
    renderMessages();
    $('send').disabled = !!busy;
    $('stop').hidden = !busy;
  }

  let pending = 0;
  function scheduleRender(m, c) {
    if (pending) return;
    pending = requestAnimationFrame(() => {
      pending = 0;
      const box = $('messages');
      if (m._el && m._el.parentElement === box) {
        renderMessage(m, c.messages.indexOf(m), c);
        box.scrollTop = box.scrollHeight;
      } else {
        renderMessages();
      }
    });
  }

  /* ------------------------------------------------------------ network */

  function headers() {
    const h = { 'Content-Type': 'application/json' };
    if (settings.apiKey) h.Authorization = 'Bearer ' + settings.apiKey;
    return h;
  }

  async function errorText(r) {
    let msg = `HTTP ${r.status}`;
    try {
      const j = await r.json();
      if (j && j.error && j.error.message) msg += ': ' + j.error.message;
    } catch (e) { /* not JSON */ }
    if (r.status === 401) msg += '\nThis server needs an API key: open Settings and enter it.';
    if (r.status === 503) msg += '\nThe server is busy or still loading; try again in a moment.';
    return msg;
  }

  function buildRequest(c, msg) {
    const messages = [];
    if (settings.system.trim()) messages.push({ role: 'system', content: settings.system });
    for (const m of c.messages) {
      if (m === msg) break;
      if (m.role === 'assistant' && !m.content && (m.error || !m.tool_calls)) continue; /* failed or empty turns */
      messages.push({ role: m.role, content: m.content });
    }
    const body = {
      model: settings.deepthink ? 'deepseek-reasoner' : 'deepseek-chat',
      messages, stream: true, stream_options: { include_usage: true },
      thinking: { type: settings.deepthink ? 'enabled' : 'disabled' },
    };
    if (settings.temperature !== '' && settings.temperature != null) body.temperature = Number(settings.temperature);
    if (settings.maxTokens !== '' && settings.maxTokens != null) body.max_tokens = Number(settings.maxTokens);
    if (settings.extra && settings.extra.trim()) Object.assign(body, JSON.parse(settings.extra));
    return body;
  }

  async function generate(c, msg) {
    showError('');
    const ctl = new AbortController();
    busy = { ctl, msg };
    c.updated = Date.now();
    renderAll();
    const t0 = performance.now();
    let tFirst = 0, tLast = 0, nTok = 0;
    try {
      const body = buildRequest(c, msg);
      const r = await fetch('/v1/chat/completions', { method: 'POST', headers: headers(), body: JSON.stringify(body), signal: ctl.signal });
      if (!r.ok) throw new Error(await errorText(r));
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      const onEvent = (block) => {
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data || data === '[DONE]') return;
        const j = JSON.parse(data);
        if (j.error) throw new Error('The server reported an error: ' + (j.error.message || 'unknown'));
        if (j.usage) msg.usage = j.usage;
        for (const ch of j.choices || []) {
          const d = ch.delta || {};
          if (d.reasoning_content || d.content) {
            nTok++;
            tLast = performance.now();
            if (!tFirst) tFirst = tLast;
          }
          if (d.reasoning_content) msg.reasoning = (msg.reasoning || '') + d.reasoning_content;
          if (d.content) msg.content += d.content;
          for (const t of d.tool_calls || []) {
            msg.tool_calls = msg.tool_calls || [];
            const e = msg.tool_calls[t.index || 0] || (msg.tool_calls[t.index || 0] = { name: '', arguments: '' });
            e.name += (t.function && t.function.name) || '';
            e.arguments += (t.function && t.function.arguments) || '';
          }
          if (ch.finish_reason) msg.finish = ch.finish_reason;
        }
        scheduleRender(msg, c);
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          onEvent(block);
        }
      }
      if (msg.usage && tLast > tFirst) msg.tps = (msg.usage.completion_tokens - 1) / ((tLast - tFirst) / 1000);
      if (msg.finish === 'length') msg.note = 'cut at max_tokens';
    } catch (e) {
      if (e.name === 'AbortError') msg.stopped = true;
      else {
        msg.error = e.message || String(e);
        showError(msg.error);
      }
    } finally {
      if (pending) { cancelAnimationFrame(pending); pending = 0; }
      busy = null;
      void t0;
      save();
      renderAll();
      updateTokens(msg);
    }
  }

  function updateTokens(m) {
    $('tokens').textContent = m && m.usage ? usageText(m) : '';
  }

  function send(text) {
    if (busy) return;
    let c = conv();
    if (!c) c = newConv();
    c.messages.push({ role: 'user', content: text });
    if (!c.title) c.title = text.replace(/\s+/g, ' ').trim().slice(0, 60) || 'New chat';
    const a = { role: 'assistant', content: '', reasoning: '', thinking: settings.deepthink };
    c.messages.push(a);
    convs = [c].concat(convs.filter((x) => x !== c));
    save();
    generate(c, a);
  }

  function regenerate(c) {
    if (busy) return;
    const last = c.messages[c.messages.length - 1];
    if (last && last.role === 'assistant') c.messages.pop();
    const a = { role: 'assistant', content: '', reasoning: '', thinking: settings.deepthink };
    c.messages.push(a);
    save();
    generate(c, a);
  }

  async function loadProps() {
    try {
      const r = await fetch('/props', { headers: headers() });
      if (!r.ok) {
        const t = await errorText(r);
        $('model-name').textContent = '';
        $('status').textContent = r.status === 401 ? 'API key needed' : 'not ready';
        showError(t);
        return;
      }
      props = await r.json();
      $('model-name').textContent = props.model;
      $('status').textContent = `context ${props.n_ctx} · ${props.total_slots} slot(s) · ${props.chat_format}`;
      const dt = $('deepthink').parentElement;
      dt.title = props.chat_format === 'v3.1' ? 'Think before answering (V3.1 thinking mode)'
               : props.chat_format === 'r1' ? 'This model always thinks first' : 'This model has no thinking mode';
      showError('');
    } catch (e) {
      $('status').textContent = 'offline';
      showError('Cannot reach the server: ' + e.message);
    }
  }

  /* --------------------------------------------------------------- wire */

  function fillSettings() {
    $('set-key').value = settings.apiKey;
    $('set-system').value = settings.system;
    $('set-temp').value = settings.temperature;
    $('set-max').value = settings.maxTokens;
    $('set-extra').value = settings.extra;
    $('deepthink').checked = !!settings.deepthink;
  }

  $('set-save').addEventListener('click', () => {
    const extra = $('set-extra').value;
    if (extra.trim()) {
      try { JSON.parse(extra); } catch (e) { showError('Extra request JSON is not valid JSON: ' + e.message); return; }
    }
    Object.assign(settings, { apiKey: $('set-key').value.trim(), system: $('set-system').value, temperature: $('set-temp').value,
                              maxTokens: $('set-max').value, extra });
    localStorage.setItem(KEY.set, JSON.stringify(settings));
    showError('');
    loadProps();
  });
  $('clear-all').addEventListener('click', () => {
    if (busy || !confirm('Delete every conversation stored in this browser?')) return;
    convs = [];
    cur = null;
    save();
    renderAll();
  });
  $('deepthink').addEventListener('change', () => {
    settings.deepthink = $('deepthink').checked;
    localStorage.setItem(KEY.set, JSON.stringify(settings));
  });
  $('new-chat').addEventListener('click', () => {
    if (busy) return;
    const c = conv();
    if (!c || c.messages.length) newConv();
    save();
    renderAll();
    $('input').focus();
  });
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('input').value;
    if (!text.trim() || busy) return;
    $('input').value = '';
    send(text);
  });
  $('input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => { if (busy) busy.ctl.abort(); });

  /* a reload mid-stream leaves no half state behind */
  for (const c of convs) for (const m of c.messages) { delete m._el; delete m._editing; }
  if (!conv() && convs.length) cur = convs[0].id;
  fillSettings();
  renderAll();
  loadProps();
})();

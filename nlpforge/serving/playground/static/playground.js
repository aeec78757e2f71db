/* nlpforge playground: the model list (/) and a page per model (/models/NAME).
 *
 * Plain JavaScript, no build step, nothing from another host. Every request goes to the
 * server's public API: GET /v1/models, POST /v1/models/NAME/predict and
 * POST /v2/models/NAME/generate_stream (server-sent events). With a server started with
 * --token, the page asks for the token once and keeps it in sessionStorage (this tab only).
 * The DOM is built with textContent only: nothing from a model or a user is parsed as HTML.
 */
'use strict';

(function () {
  const body = document.body;
  const ROOT = body.dataset.root || '';
  const TOKEN_KEY = 'nlpforge-playground-token';
  const TASK_KINDS = {
    'text-classification': 'classify',
    'token-classification': 'entities',
    'question-answering': 'answer',
    'fill-mask': 'fill',
    'sentence-embedding': 'similarity',
  };
  const MAX_LABELS_LISTED = 12;
  const PALETTE = 8; // entity colours: .ent-0 … .ent-7 in playground.css

  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** An element: ``el('li', {className: 'x', textContent: 'y'}, child, 'text', …)``. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key.startsWith('aria-') || key === 'role' || key === 'scope') node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function score(value) {
    return typeof value === 'number' && isFinite(value) ? value.toFixed(3) : '–';
  }

  // -- token ----------------------------------------------------------------------------

  function getToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (err) {
      return '';
    }
  }

  function setToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      /* storage blocked: the token lives as long as the page */
    }
    memoryToken = token;
    $('forget-token').hidden = !token;
  }

  let memoryToken = getToken();
  let afterToken = null; // what to run again once a token is given

  function currentToken() {
    return getToken() || memoryToken;
  }

  function askForToken(refused, retry) {
    const form = $('token-form');
    afterToken = retry || afterToken;
    $('token-why').textContent = refused
      ? 'The server refused this token. Enter the one it was started with (--token).'
      : 'This server needs a token (it was started with --token).';
    form.hidden = false;
    $('token').focus();
  }

  function setUpToken() {
    $('forget-token').hidden = !currentToken();
    $('forget-token').addEventListener('click', () => {
      setToken('');
      location.reload();
    });
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const value = $('token').value.trim();
      if (!/^[\x21-\x7e]+$/.test(value)) {
        showError(new Error('A token is made of printable ASCII characters, without spaces.'));
        return;
      }
      setToken(value);
      $('token').value = '';
      $('token-form').hidden = true;
      clearError();
      const retry = afterToken;
      afterToken = null;
      if (retry) retry();
    });
  }

  // -- errors ---------------------------------------------------------------------------

  function showError(err) {
    const box = $('error');
    box.textContent = (err && err.message) || String(err);
    box.hidden = false;
  }

  function clearError() {
    const box = $('error');
    box.hidden = true;
    box.textContent = '';
  }

  function setStatus(text) {
    $('status').textContent = text;
  }

  window.addEventListener('error', (event) => {
    showError(new Error('The page hit an error: ' + event.message));
  });
  window.addEventListener('unhandledrejection', (event) => {
    const reason = event.reason;
    showError(new Error('The page hit an error: ' + ((reason && reason.message) || reason)));
  });

  // -- the API --------------------------------------------------------------------------

  async function errorMessage(response) {
    let text = '';
    try {
      text = await response.text();
    } catch (err) {
      /* the body is lost: the status still says something */
    }
    let message = text;
    try {
      const data = JSON.parse(text);
      if (data && typeof data.error === 'string') message = data.error;
    } catch (err) {
      /* not JSON: show the text */
    }
    message = (message || response.statusText || 'no message').slice(0, 2000);
    return 'Error ' + response.status + ': ' + message;
  }

  /** ``fetch`` of an API route, with the token; ApiError with the server's message. */
  async function api(path, options) {
    const opts = options || {};
    const headers = {Accept: opts.accept || 'application/json'};
    const token = currentToken();
    if (token) headers.Authorization = 'Bearer ' + token;
    const init = {method: 'GET', headers, cache: 'no-store', credentials: 'omit',
                  redirect: 'error', signal: opts.signal};
    if (opts.body !== undefined) {
      init.method = 'POST';
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let response;
    try {
      response = await fetch(ROOT + path, init);
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, 'The server could not be reached (' + err.message +
                            '). Is it still running?');
    }
    if (response.ok) return response;
    const message = await errorMessage(response);
    if (response.status === 401) askForToken(Boolean(token), opts.retry);
    throw new ApiError(response.status, message);
  }

  async function listModels(retry) {
    const response = await api('/v1/models', {retry});
    const data = await response.json();
    return Array.isArray(data.models) ? data.models : [];
  }

  async function predict(model, inputs, retry) {
    const response = await api('/v1/models/' + encodeURIComponent(model.name) + '/predict',
                               {body: {inputs}, retry});
    const data = await response.json();
    return data.predictions;
  }

  function modelUrl(name) {
    return ROOT + '/models/' + encodeURIComponent(name);
  }

  function kindOf(model) {
    if (model.generates) return 'generate';
    return TASK_KINDS[model.task] || 'generic';
  }

  function entityTypes(labels) {
    const types = [];
    for (const label of labels || []) {
      const type = String(label).replace(/^[BIESLU]-/, '');
      if (label !== 'O' && !types.includes(type)) types.push(type);
    }
    return types;
  }

  /** The labels as chips (at most MAX_LABELS_LISTED, then how many more). */
  function labelChips(labels) {
    const list = el('dd', {className: 'labels'});
    if (!Array.isArray(labels) || !labels.length) {
      list.textContent = '—';
      return list;
    }
    for (const label of labels.slice(0, MAX_LABELS_LISTED)) {
      list.append(el('span', {className: 'chip', textContent: label}), ' ');
    }
    const more = labels.length - MAX_LABELS_LISTED;
    if (more > 0) list.append('and ' + more + ' more');
    return list;
  }

  // -- the model list (/) ---------------------------------------------------------------

  function modelCard(model) {
    const facts = el('dl', {className: 'facts'});
    const add = (term, value, className) => {
      facts.append(el('dt', {textContent: term}), typeof value === 'string'
        ? el('dd', {textContent: value, className: className || ''}) : value);
    };
    add('Task', model.task);
    add('Family', model.family || '—');
    add('Variant', model.variant || '—');
    add('Labels', labelChips(model.labels));
    add('Status', model.ready ? 'ready' : 'warming up', model.ready ? 'ready' : 'warming');
    return el('li', {className: 'card', dataset: {model: model.name}},
              el('h2', {textContent: model.name}),
              facts,
              el('p', {}, el('a', {className: 'button', href: modelUrl(model.name),
                                   textContent: 'Try ' + model.name})));
  }

  async function initIndex() {
    let models;
    try {
      models = await listModels(initIndex);
    } catch (err) {
      setStatus(err.status === 401 ? 'The model list needs the token.'
                                   : 'The model list could not be loaded.');
      showError(err);
      return;
    }
    clearError();
    $('token-form').hidden = true;
    const list = $('models');
    list.replaceChildren(...models.map(modelCard));
    list.hidden = false;
    const waiting = models.filter((m) => !m.ready).length;
    setStatus(models.length + (models.length === 1 ? ' model' : ' models') + ' served' +
              (waiting ? '; warming up…' : '.'));
    if (waiting) setTimeout(initIndex, 1000);
  }

  // -- a model's page (/models/NAME) ----------------------------------------------------

  let current = null; // the model of this page
  let running = null; // the AbortController of the generation streaming now

  function modelName() {
    const path = location.pathname.slice(ROOT.length);
    const match = /^\/models\/([^/]+)\/?$/.exec(path);
    return match ? decodeURIComponent(match[1]) : '';
  }

  function result(state) {
    const section = $('result');
    section.replaceChildren();
    section.hidden = false;
    section.dataset.state = state || 'done';
    return section;
  }

  function setUpSwitcher(models, name) {
    const select = $('switch');
    select.replaceChildren(...models.map((m) => el('option', {
      value: m.name, textContent: m.name + ' (' + m.task + ')', selected: m.name === name})));
    select.disabled = false;
    let byKey = false;
    select.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        location.assign(modelUrl(select.value));
      } else {
        byKey = true;
      }
    });
    select.addEventListener('change', () => {
      // a pointer choice opens the model; arrow keys only move (Enter opens)
      if (!byKey && select.value !== name) location.assign(modelUrl(select.value));
      byKey = false;
    });
  }

  async function initModel() {
    const name = modelName();
    let models;
    try {
      models = await listModels(initModel);
    } catch (err) {
      setStatus(err.status === 401 ? 'This page needs the token.' : 'The model could not be loaded.');
      showError(err);
      return;
    }
    clearError();
    $('token-form').hidden = true;
    setUpSwitcher(models, name);
    const model = models.find((m) => m.name === name);
    if (!model) {
      $('title').textContent = 'Unknown model';
      setStatus('');
      showError(new Error('No model called "' + name + '" is served here. Served: ' +
                          (models.map((m) => m.name).join(', ') || 'none') + '.'));
      return;
    }
    current = model;
    document.title = model.name + ' · nlpforge playground';
    $('title').textContent = model.name;
    $('meta').textContent = [model.task, model.family, model.variant,
                             'up to ' + model.max_tokens + ' tokens'].filter(Boolean).join(' · ');
    const kind = kindOf(model);
    const form = $('form-' + kind);
    SETUP[kind](model, form);
    form.hidden = false;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      run(kind, model, form);
    });
    waitUntilReady(model, form);
  }

  function submitButton(form) {
    return form.querySelector('button[type=submit]');
  }

  async function waitUntilReady(model, form) {
    if (model.ready) {
      setStatus('Ready.');
      return;
    }
    submitButton(form).disabled = true;
    setStatus('The model is warming up…');
    const poll = async () => {
      try {
        const models = await listModels();
        const now = models.find((m) => m.name === model.name);
        if (now && now.ready) {
          submitButton(form).disabled = false;
          setStatus('Ready.');
          return;
        }
      } catch (err) {
        showError(err);
      }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }

  async function run(kind, model, form) {
    clearError();
    const button = submitButton(form);
    button.disabled = true;
    $('result').setAttribute('aria-busy', 'true');
    try {
      await RUN[kind](model, form);
    } catch (err) {
      if (err.name !== 'AbortError') {
        showError(err);
        // an earlier answer would read as this input's; streamed text stays, marked
        if (kind !== 'generate') $('result').hidden = true;
      }
    } finally {
      button.disabled = false;
      $('result').removeAttribute('aria-busy');
    }
  }

  function retrySubmit(form) {
    return () => form.requestSubmit();
  }

  // -- text-classification: a bar per label -------------------------------------------------

  function setUpClassify(model, form) {
    form.elements.text.value = (model.example && model.example.text) || '';
    if (!(model.inputs || []).includes('text_pair')) {
      form.querySelector('label[for=classify-pair]').hidden = true;
      form.elements.text_pair.hidden = true;
    }
  }

  async function runClassify(model, form) {
    const text = form.elements.text.value;
    const pair = form.elements.text_pair.value;
    const input = pair.trim() ? {text, text_pair: pair} : {text};
    const [prediction] = await predict(model, [input], retrySubmit(form));
    showBars(model, prediction);
  }

  function showBars(model, prediction) {
    const section = result();
    const scores = Object.entries(prediction.scores || {}).sort((a, b) => b[1] - a[1]);
    const multi = Array.isArray(prediction.labels);
    const threshold = Number((model.settings || {}).threshold ?? 0.5);
    if (multi) {
      section.append(el('p', {className: 'summary', textContent: prediction.labels.length
        ? 'Predicted labels: ' + prediction.labels.join(', ')
        : 'No label reaches the threshold.'}));
      section.append(el('p', {className: 'hint', textContent: 'Multi-label: a label is ' +
        'predicted (✓) when its score is at least the threshold, ' + threshold +
        ' (the line across the bars).'}));
    } else {
      section.append(el('p', {className: 'summary'}, 'Top label: ',
                          el('strong', {textContent: prediction.label}),
                          ' (' + score(prediction.score) + ')'));
    }
    const list = el('ol', {className: 'bars' + (multi ? ' multi' : ''), 'aria-label': 'Scores'});
    for (const [label, value] of scores) {
      const on = multi ? prediction.labels.includes(label) : label === prediction.label;
      const fill = el('span', {className: 'bar-fill'});
      fill.style.width = (Math.max(0, Math.min(1, value)) * 100).toFixed(2) + '%';
      const track = el('span', {className: 'bar-track'}, fill);
      if (multi) {
        const line = el('span', {className: 'bar-threshold', title: 'threshold ' + threshold});
        line.style.left = (Math.max(0, Math.min(1, threshold)) * 100).toFixed(2) + '%';
        track.append(line);
      }
      list.append(el('li', {className: 'bar-row' + (on ? (multi ? ' on' : ' top') : ''),
                            dataset: {label}},
                         el('span', {className: 'bar-label', textContent: (multi && on ? '✓ ' : '') + label}),
                         track,
                         el('span', {className: 'bar-value', textContent: score(value)})));
    }
    section.append(list);
  }

  // -- token-classification: entities inline -------------------------------------------------

  /** UTF-16 offset of each code point offset of ``text`` (the server counts code points). */
  function unitOffsets(text) {
    const offsets = [0];
    let unit = 0;
    for (const ch of text) {
      unit += ch.length;
      offsets.push(unit);
    }
    return offsets;
  }

  function setUpEntities(model, form) {
    form.elements.text.value = (model.example && model.example.text) || '';
  }

  async function runEntities(model, form) {
    const text = form.elements.text.value;
    const [prediction] = await predict(model, [{text}], retrySubmit(form));
    showEntities(model, text, prediction);
  }

  function showEntities(model, text, prediction) {
    const section = result();
    const entities = (prediction.entities || []).slice().sort((a, b) => a.start - b.start);
    const types = entityTypes(model.labels);
    for (const e of entities) {
      const type = entityType(e);
      if (!types.includes(type)) types.push(type);
    }
    const colour = (type) => 'ent-' + (types.indexOf(type) % PALETTE);
    const legend = el('ul', {className: 'legend', 'aria-label': 'Entity types'});
    for (const type of types) {
      legend.append(el('li', {}, el('span', {className: 'swatch ' + colour(type), 'aria-hidden': 'true'}),
                       type));
    }
    section.append(el('p', {className: 'summary', textContent: entities.length
      ? entities.length + (entities.length === 1 ? ' entity' : ' entities') + ' found.'
      : 'No entities found.'}), legend);
    const units = unitOffsets(text);
    const shown = el('p', {className: 'highlighted', 'aria-label': 'Text with entities'});
    let at = 0;
    for (const e of entities) {
      const start = units[e.start] ?? text.length;
      const end = units[e.end] ?? text.length;
      if (start < at || end <= start) continue; // overlapping or empty: listed below only
      shown.append(text.slice(at, start));
      const type = entityType(e);
      shown.append(el('mark', {className: 'ent ' + colour(type), dataset: {type},
                               title: type + ' ' + score(e.score)},
                      text.slice(start, end),
                      el('span', {className: 'ent-type', textContent: type})));
      at = end;
    }
    shown.append(text.slice(at));
    section.append(shown);
    if (entities.length) {
      const table = el('table', {className: 'entities'},
                       el('caption', {textContent: 'Entities'}),
                       el('thead', {}, el('tr', {}, el('th', {scope: 'col', textContent: 'Text'}),
                                         el('th', {scope: 'col', textContent: 'Type'}),
                                         el('th', {scope: 'col', textContent: 'Score'}))));
      const rows = el('tbody');
      for (const e of entities) {
        rows.append(el('tr', {}, el('td', {textContent: e.text ?? text.slice(units[e.start], units[e.end])}),
                       el('td', {textContent: entityType(e)}),
                       el('td', {textContent: score(e.score)})));
      }
      table.append(rows);
      section.append(table);
    }
  }

  function entityType(entity) {
    return String(entity.type || entity.tag || entity.label || '?').replace(/^[BIESLU]-/, '');
  }

  // -- question-answering: the answer marked in its context ------------------------------

  function setUpAnswer(model, form) {
    const example = model.example || {};
    form.elements.question.value = example.question || '';
    form.elements.context.value = example.context || '';
  }

  async function runAnswer(model, form) {
    const question = form.elements.question.value;
    const context = form.elements.context.value;
    const [prediction] = await predict(model, [{question, context}], retrySubmit(form));
    const section = result();
    if (!prediction.answer) {
      section.append(el('p', {className: 'summary', textContent:
        'The model found no answer in the context (score ' + score(prediction.score) + ').'}));
      section.append(el('p', {className: 'highlighted', textContent: context}));
      return;
    }
    section.append(el('p', {className: 'summary'}, 'Answer: ',
                        el('strong', {className: 'answer-text', textContent: prediction.answer}),
                        ' (score ' + score(prediction.score) + ')'));
    const units = unitOffsets(context);
    const start = units[prediction.start] ?? context.length;
    const end = units[prediction.end] ?? context.length;
    section.append(el('p', {className: 'highlighted', 'aria-label': 'Context with the answer'},
                      context.slice(0, start),
                      el('mark', {className: 'answer', textContent: context.slice(start, end)}),
                      context.slice(end)));
    if (Array.isArray(prediction.n_best) && prediction.n_best.length > 1) {
      const others = el('ol', {className: 'n-best'});
      for (const a of prediction.n_best) {
        others.append(el('li', {textContent: a.answer + ' (' + score(a.score) + ')'}));
      }
      section.append(el('p', {className: 'hint', textContent: 'Best answers:'}), others);
    }
  }

  // -- fill-mask: the top fillers ----------------------------------------------------------

  function setUpFill(model, form) {
    const mask = model.mask_token || '[MASK]';
    $('fill-mask-name').textContent = mask;
    $('fill-mask-name').className = 'mask';
    $('fill-insert').textContent = 'Insert ' + mask;
    form.elements.text.value = (model.example && model.example.text) || 'the movie was ' + mask + '.';
    const topK = Number((model.settings || {}).top_k);
    if (topK > 0) form.elements.top_k.value = topK;
    $('fill-insert').addEventListener('click', () => {
      const area = form.elements.text;
      const start = area.selectionStart ?? area.value.length;
      const end = area.selectionEnd ?? start;
      area.setRangeText(mask, start, end, 'end');
      area.focus();
    });
  }

  async function runFill(model, form) {
    const text = form.elements.text.value;
    const topK = parseInt(form.elements.top_k.value, 10);
    const input = {text};
    if (topK > 0) input.top_k = topK;
    const [prediction] = await predict(model, [input], retrySubmit(form));
    const section = result();
    const masks = prediction.masks || [];
    section.append(el('p', {className: 'summary', textContent: masks.length === 1
      ? 'Top fillers for the mask:' : 'Top fillers for each of the ' + masks.length + ' masks:'}));
    masks.forEach((fillers, i) => {
      if (masks.length > 1) section.append(el('h2', {className: 'mask-heading', textContent: 'Mask ' + (i + 1)}));
      const list = el('ol', {className: 'bars fillers'});
      for (const f of fillers) {
        const fill = el('span', {className: 'bar-fill'});
        fill.style.width = (Math.max(0, Math.min(1, f.score)) * 100).toFixed(2) + '%';
        list.append(el('li', {className: 'bar-row', dataset: {token: f.token_str}, title: f.sequence || ''},
                         el('span', {className: 'bar-label filler', textContent: f.token_str}),
                         el('span', {className: 'bar-track'}, fill),
                         el('span', {className: 'bar-value', textContent: score(f.score)})));
      }
      section.append(list);
      if (masks.length === 1 && fillers.length && fillers[0].sequence) {
        section.append(el('p', {className: 'hint'}, 'Best: ',
                          el('q', {textContent: fillers[0].sequence})));
      }
    });
  }

  // -- text generation and sequence-to-sequence: streamed text ---------------------------

  function setUpGenerate(model, form) {
    const example = model.example || {};
    const first = Object.values(example).find((v) => typeof v === 'string');
    form.elements.text_input.value = first || '';
    $('generate-text-label').textContent = model.task === 'text-generation' ? 'Prompt' : 'Input text';
    const defaults = model.generation || {};
    if (defaults.max_new_tokens) form.elements.max_new_tokens.value = Math.min(defaults.max_new_tokens, 64);
    if (defaults.num_beams > 1) form.elements.num_beams.value = defaults.num_beams;
    $('generate-stop').addEventListener('click', stopGenerating);
  }

  function stopGenerating() {
    if (running) running.abort();
  }

  function numberOf(input, parse) {
    const value = parse(input.value);
    return Number.isFinite(value) ? value : undefined;
  }

  async function runGenerate(model, form) {
    const parameters = {};
    const max = numberOf(form.elements.max_new_tokens, (v) => parseInt(v, 10));
    if (max !== undefined) parameters.max_new_tokens = max;
    const temperature = numberOf(form.elements.temperature, parseFloat);
    if (temperature > 0) {
      parameters.do_sample = true;
      parameters.temperature = temperature;
      const topP = numberOf(form.elements.top_p, parseFloat);
      if (topP !== undefined) parameters.top_p = topP;
    }
    const beams = numberOf(form.elements.num_beams, (v) => parseInt(v, 10));
    if (beams !== undefined && beams !== 1) parameters.num_beams = beams;
    const controller = new AbortController();
    running = controller;
    const stop = $('generate-stop');
    stop.disabled = false;
    const section = result('busy');
    const output = el('p', {id: 'generated', className: 'generated', dataset: {pieces: '0'}});
    if (model.task === 'text-generation') {
      output.append(el('span', {className: 'prompt', textContent: form.elements.text_input.value}));
    }
    const text = el('span', {className: 'continuation'});
    output.append(text, el('span', {className: 'cursor', 'aria-hidden': 'true'}));
    const info = el('p', {className: 'hint', role: 'status', textContent: 'Generating…'});
    section.append(output, info);
    let pieces = 0;
    try {
      const response = await api('/v2/models/' + encodeURIComponent(model.name) + '/generate_stream', {
        body: {text_input: form.elements.text_input.value, parameters},
        accept: 'text/event-stream', signal: controller.signal, retry: retrySubmit(form)});
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      let finished = false;
      while (!finished) {
        const {value, done} = await reader.read();
        buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = event.split('\n').filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trimStart()).join('\n');
          if (!data) continue;
          const message = JSON.parse(data);
          if (message.error) throw new ApiError(200, 'The generation failed: ' + message.error);
          if (message.text_output) {
            text.append(message.text_output);
            pieces += 1;
            output.dataset.pieces = String(pieces);
          }
          if (message.done) finished = true;
        }
        if (done) break;
      }
      section.dataset.state = finished ? 'done' : 'error';
      info.textContent = finished
        ? 'Done: ' + pieces + (pieces === 1 ? ' piece, ' : ' pieces, ') + text.textContent.length + ' characters.'
        : 'The stream ended early.';
    } catch (err) {
      if (err.name === 'AbortError') {
        section.dataset.state = 'stopped';
        info.textContent = 'Stopped after ' + pieces + (pieces === 1 ? ' piece.' : ' pieces.');
      } else {
        section.dataset.state = 'error';
        info.textContent = 'Failed.';
      }
      throw err;
    } finally {
      output.classList.add('ended');
      stop.disabled = true;
      if (running === controller) running = null;
    }
  }

  // -- sentence-embedding: a cosine similarity matrix ------------------------------------

  function addTextBox(list, value) {
    const n = list.children.length + 1;
    const id = 'similarity-text-' + n;
    list.append(el('li', {}, el('label', {htmlFor: id, textContent: 'Text ' + n}),
                   el('textarea', {id, name: 'texts', rows: 2, value: value || ''})));
  }

  function setUpSimilarity(model, form) {
    const example = model.example || {};
    const list = $('similarity-texts');
    addTextBox(list, example.text || '');
    addTextBox(list, example.text_pair || '');
    addTextBox(list, '');
    $('similarity-add').addEventListener('click', () => {
      if (list.children.length >= 16) return;
      addTextBox(list, '');
      list.lastElementChild.querySelector('textarea').focus();
    });
  }

  function cosine(a, b) {
    let dot = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i++) {
      dot += a[i] * b[i];
      na += a[i] * a[i];
      nb += b[i] * b[i];
    }
    return na && nb ? dot / Math.sqrt(na * nb) : 0;
  }

  async function runSimilarity(model, form) {
    const texts = Array.from(form.querySelectorAll('textarea[name=texts]'))
      .map((t) => t.value).filter((t) => t.trim());
    if (texts.length < 2) throw new Error('Give at least two texts to compare.');
    const predictions = await predict(model, texts, retrySubmit(form));
    const vectors = predictions.map((p) => p.embedding);
    const section = result();
    section.append(el('p', {className: 'summary', textContent: 'Cosine similarity of ' +
      texts.length + ' texts (1: same direction, 0: unrelated, −1: opposite).'}));
    const head = el('tr', {}, el('td'));
    texts.forEach((_, j) => head.append(el('th', {scope: 'col', textContent: String(j + 1)})));
    const rows = el('tbody');
    texts.forEach((_, i) => {
      const row = el('tr', {}, el('th', {scope: 'row', textContent: String(i + 1)}));
      texts.forEach((__, j) => {
        const value = cosine(vectors[i], vectors[j]);
        const cell = el('td', {textContent: value.toFixed(2), dataset: {i: String(i), j: String(j)},
                               title: 'text ' + (i + 1) + ' · text ' + (j + 1)});
        cell.style.setProperty('--v', String(Math.max(0, value)));
        row.append(cell);
      });
      rows.append(row);
    });
    section.append(el('div', {className: 'scroll'},
                      el('table', {className: 'matrix'},
                         el('caption', {textContent: 'Cosine similarity'}),
                         el('thead', {}, head), rows)));
    const legend = el('ol', {className: 'texts-legend'});
    for (const t of texts) legend.append(el('li', {textContent: t.length > 120 ? t.slice(0, 119) + '…' : t}));
    section.append(legend);
  }

  // -- any other task: JSON in and out ---------------------------------------------------

  function setUpGeneric(model, form) {
    $('generic-fields').textContent = (model.inputs || []).join(', ') || '—';
    form.elements.input.value = JSON.stringify(model.example || {}, null, 1);
  }

  async function runGeneric(model, form) {
    const raw = form.elements.input.value;
    let input = raw;
    if (raw.trim().startsWith('{')) {
      try {
        input = JSON.parse(raw);
      } catch (err) {
        throw new Error('The input starts with "{" but is not valid JSON: ' + err.message);
      }
    }
    const [prediction] = await predict(model, [input], retrySubmit(form));
    result().append(el('pre', {className: 'json', textContent: JSON.stringify(prediction, null, 2)}));
  }

  const SETUP = {classify: setUpClassify, entities: setUpEntities, answer: setUpAnswer,
                 fill: setUpFill, generate: setUpGenerate, similarity: setUpSimilarity,
                 generic: setUpGeneric};
  const RUN = {classify: runClassify, entities: runEntities, answer: runAnswer, fill: runFill,
               generate: runGenerate, similarity: runSimilarity, generic: runGeneric};

  // -- keyboard ---------------------------------------------------------------------------

  document.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      const form = event.target.closest && event.target.closest('form.try');
      if (form && !form.hidden) {
        event.preventDefault();
        form.requestSubmit();
      }
    } else if (event.key === 'Escape' && running) {
      stopGenerating();
    }
  });

  // -- start ------------------------------------------------------------------------------

  setUpToken();
  if (body.dataset.page === 'index') initIndex();
  else if (body.dataset.page === 'model') initModel();
})();

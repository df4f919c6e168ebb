"""The web UI's pages, as Jinja templates with autoescaping on for every value.

Nothing here is marked safe: names, templates, licences and GGUF strings are untrusted and
reach the page only through `{{ }}`, which escapes them; scripts and styles come only from
/ui/static (the Content-Security-Policy forbids inline ones).
"""

from __future__ import annotations

from jinja2 import DictLoader, Environment, select_autoescape

from api.humanize import human_bytes

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf" content="{{ csrf }}">
<title>{% block title %}corral{% endblock %} · corral</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/static/app.css">
<script src="/ui/static/app.js" defer></script>
</head><body>
<header><nav>
<a class="brand" href="/ui/">corral</a>
<a href="/ui/">Models</a><a href="/ui/running">Running</a><a href="/ui/transfers">Transfers</a>
<a href="/ui/pull">Pull</a><a href="/ui/keys">Keys</a>
<span class="who">{% if user %}{{ user }}{% if logged_in %}
<form method="post" action="/ui/logout" class="inline"><input type="hidden" name="csrf" value="{{ csrf }}">
<button type="submit">Log out</button></form>{% endif %}{% else %}<a href="/ui/login">Log in</a>{% endif %}</span>
</nav></header>
<main>{% block main %}{% endblock %}</main>
</body></html>
"""

MODELS = """{% extends "base" %}{% block title %}Models{% endblock %}{% block main %}
<h1>Models <small>{{ page.total }}</small></h1>
<form method="get" action="/ui/" class="filters" id="search">
<input type="search" name="q" value="{{ q }}" placeholder="Search models" aria-label="Search">
<select name="ns" aria-label="Namespace"><option value="">all namespaces</option>
{% for ns in page.namespaces %}<option value="{{ ns }}"{% if ns == namespace %} selected{% endif %}>{{ ns }}</option>{% endfor %}
</select>
<select name="sort" aria-label="Sort">{% for s in sorts %}<option value="{{ s }}"{% if s == sort %} selected{% endif %}>{{ s }}</option>{% endfor %}</select>
<select name="order" aria-label="Order"><option value="desc"{% if desc %} selected{% endif %}>descending</option>
<option value="asc"{% if not desc %} selected{% endif %}>ascending</option></select>
<button type="submit">Apply</button></form>
<table class="models"><thead><tr><th>Name</th><th>Size</th><th>Parameters</th><th>Quantization</th><th>ID</th><th>Modified</th></tr></thead><tbody>
{% for r in page.rows %}<tr><td><a class="model-link" href="/ui/model/{{ r.full|urlencode }}">{{ r.name }}</a></td>
<td>{{ r.size|size }}</td><td>{{ r.parameter_size }}</td><td>{{ r.quantization }}</td>
<td><code>{{ r.digest[:12] }}</code></td><td>{{ r.modified|when }}</td></tr>
{% else %}<tr><td colspan="6">No models match.</td></tr>{% endfor %}
</tbody></table>
<nav class="pages" aria-label="Pages">
{% if page.page > 1 %}<a rel="prev" href="{{ link(page.page - 1) }}">&larr; previous</a>{% endif %}
<span>page {{ page.page }} of {{ page.pages }}</span>
{% if page.page < page.pages %}<a rel="next" href="{{ link(page.page + 1) }}">next &rarr;</a>{% endif %}
</nav>
{% endblock %}"""

MODEL = """{% extends "base" %}{% block title %}{{ name }}{% endblock %}{% block main %}
<h1 id="model-name">{{ name }}</h1>
<p class="meta"><code title="model id">{{ model_id[:12] }}</code> · {{ size|size }} · modified {{ modified }}
{% if capabilities %} · {% for c in capabilities %}<span class="cap">{{ c }}</span> {% endfor %}{% endif %}</p>
{% if tags %}<p>Tags: {% for t in tags %}<a href="/ui/model/{{ t.full|urlencode }}">{{ t.tag }}</a> {% endfor %}</p>{% endif %}

<section><h2>Pull</h2>
{% for label, line in pull_lines %}<div class="pull-line"><span>{{ label }}</span><code>{{ line }}</code>
<button type="button" data-copy="{{ line }}">Copy</button></div>{% endfor %}</section>

{% if can_push or can_delete %}<section class="actions"><h2>Actions</h2>
{% if can_delete %}<form data-action="delete" data-model="{{ full }}"><button type="submit" id="delete">Delete this tag</button></form>{% endif %}
{% if can_push %}<form data-action="copy" data-model="{{ full }}"><input name="destination" placeholder="new name" aria-label="Copy to" required>
<button type="submit">Copy</button></form>{% endif %}
<p class="status" data-status></p></section>{% endif %}

<section><h2>Details</h2><table class="kv">
{% for k, v in details %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></section>

<section><h2>Layers</h2><table class="layers" id="layers"><thead><tr><th>Media type</th><th>Digest</th><th>Size</th></tr></thead><tbody>
{% for l in layers %}<tr><td>{{ l.media_type }}</td><td><code title="{{ l.digest }}">{{ l.digest[:19] }}</code></td><td>{{ l.size|size }}</td></tr>{% endfor %}
</tbody></table></section>

{% if parameters %}<section><h2>Parameters</h2><pre>{{ parameters }}</pre></section>{% endif %}
{% if template %}<section><h2>Template</h2><pre id="template">{{ template }}</pre></section>{% endif %}
{% if system %}<section><h2>System</h2><pre id="system">{{ system }}</pre></section>{% endif %}
{% if license %}<section><h2>License</h2><pre id="license">{{ license }}</pre></section>{% endif %}
<section><h2>Modelfile</h2><pre id="modelfile">{{ modelfile }}</pre></section>
{% if model_info %}<section><h2>GGUF</h2><table class="kv" id="gguf">
{% for k, v in model_info %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></section>{% endif %}
{% endblock %}"""

PULL = """{% extends "base" %}{% block title %}Pull{% endblock %}{% block main %}
<h1>Pull a model</h1>
{% if can_pull %}<form data-action="pull" id="pull-form">
<input name="model" placeholder="host/namespace/model:tag" aria-label="Model" required>
<label><input type="checkbox" name="insecure"> plain http</label>
<button type="submit">Pull</button></form>
<progress id="pull-progress" max="100" value="0"></progress> <span id="pull-percent">0%</span>
<p class="status" data-status id="pull-status"></p>
{% else %}<p>Log in with a key that has the <code>pull</code> scope to pull models.</p>{% endif %}
{% endblock %}"""

TRANSFERS = """{% extends "base" %}{% block title %}Transfers{% endblock %}{% block main %}
<h1>Transfers</h1>
<table id="transfers" data-can-cancel="{{ 'yes' if can_cancel else '' }}"><thead><tr><th>#</th><th>Kind</th><th>Model</th><th>Status</th><th>Progress</th><th></th></tr></thead>
<tbody>{% for t in transfers %}<tr><td>{{ t.id }}</td><td>{{ t.direction }}</td><td>{{ t.model }}</td><td>{{ t.status }}</td>
<td>{{ t.completed|size }} / {{ t.total|size }}</td><td></td></tr>{% endfor %}</tbody></table>
{% endblock %}"""

RUNNING = """{% extends "base" %}{% block title %}Running{% endblock %}{% block main %}
<h1>Running models</h1>
<table id="running"><thead><tr><th>Name</th><th>Size</th><th>Context</th><th>Until</th></tr></thead><tbody>
{% for m in running %}<tr><td>{{ m.name }}</td><td>{{ m.size|size }}</td><td>{{ m.context }}</td><td>{{ m.expires }}</td></tr>
{% else %}<tr><td colspan="4">No model is loaded.</td></tr>{% endfor %}</tbody></table>
<h2>Chat</h2>
{% if can_infer %}<form data-action="chat" id="chat-form">
<select name="model" aria-label="Model">{% for m in models %}<option value="{{ m }}">{{ m }}</option>{% endfor %}</select>
<textarea name="prompt" rows="3" aria-label="Message" required></textarea>
<button type="submit">Send</button></form>
<div id="chat-log" class="chat" aria-live="polite"></div>
{% else %}<p>Log in with a key that has the <code>infer</code> scope to chat.</p>{% endif %}
{% endblock %}"""

KEYS = """{% extends "base" %}{% block title %}Keys{% endblock %}{% block main %}
<h1>Keys</h1>
{% if not can_view %}<p>Log in with a key that has the <code>manage</code> scope to see keys.</p>{% else %}
<h2>Authorized keys (signed requests and registry pushes)</h2>
<table id="authorized-keys"><thead><tr><th>Key</th><th>May push to</th></tr></thead><tbody>
{% for k in authorized %}<tr><td><code>{{ k.key }}</code></td><td>{{ k.namespaces }}</td></tr>
{% else %}<tr><td colspan="2">No authorized keys file.</td></tr>{% endfor %}</tbody></table>
<h2>API keys</h2>
<table id="api-keys"><thead><tr><th>Name</th><th>ID</th><th>Scopes</th><th>Namespaces</th><th>Created</th><th>State</th></tr></thead><tbody>
{% for k in api_keys %}<tr><td>{{ k.name }}</td><td><code>{{ k.id }}</code></td><td>{{ k.scopes|join(", ") }}</td>
<td>{{ k.namespaces|join(", ") }}</td><td>{{ k.created_at }}</td><td>{{ "revoked" if k.revoked else "active" }}</td></tr>
{% else %}<tr><td colspan="6">No API keys.</td></tr>{% endfor %}</tbody></table>
<p>Keys are managed with <code>corral keys create|list|revoke</code> on the server.</p>{% endif %}
{% endblock %}"""

LOGIN = """{% extends "base" %}{% block title %}Log in{% endblock %}{% block main %}
<h1>Log in</h1>
{% if error %}<p class="error" id="login-error">{{ error }}</p>{% endif %}
<form method="post" action="/ui/login" id="login-form">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="password" name="key" placeholder="API key" aria-label="API key" autocomplete="off" required>
<button type="submit">Log in</button></form>
<p>Create a key on the server with <code>corral keys create --name me --scope pull,push,infer,manage</code>.</p>
{% endblock %}"""

ERROR = """{% extends "base" %}{% block title %}{{ status }}{% endblock %}{% block main %}
<h1>{{ status }}</h1><p id="error-message">{{ message }}</p>{% endblock %}"""


def _when(ts: float) -> str:
    from api.ui.index import modified_text

    return modified_text(ts)


def environment() -> Environment:
    env = Environment(
        loader=DictLoader({"base": BASE, "models": MODELS, "model": MODEL, "pull": PULL,
                           "transfers": TRANSFERS, "running": RUNNING, "keys": KEYS,
                           "login": LOGIN, "error": ERROR}),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["size"] = lambda n: human_bytes(int(n or 0))
    env.filters["when"] = _when
    return env

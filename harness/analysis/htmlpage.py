"""The report as one self-contained HTML page: the writer's blocks (headings with their
anchors, paragraphs, lists, tables, figures as base64 PNG) rendered through a Jinja2
template, with a small inline script that sorts a table by the column clicked. Plain data
in, text out; nothing here writes files (harness.analysis.writer does)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pandas as pd
from jinja2 import Environment
from markupsafe import Markup, escape

_INLINE = [  # the Markdown the report's sentences use, applied to escaped text
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>"),
    (re.compile(r"(?<![\w])_(?!\s)([^_]+?)(?<!\s)_(?![\w])"), r"<em>\1</em>"),
]

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; color: #222; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
a.anchor { color: #bbb; text-decoration: none; margin-left: .3rem; font-size: .8em; }
.stamp { color: #666; font-style: italic; }
.table-wrap { overflow-x: auto; margin: .3rem 0 1.2rem; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .2rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; cursor: pointer; user-select: none; } th:hover { background: #e8e8e8; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; } figcaption, .caption { font-style: italic; }
code { background: #f4f4f4; padding: 0 .2rem; }
</style>
</head>
<body>
<h1 id="{{ title_id }}">{{ title }}</h1>
<p class="stamp">{{ stamp }}</p>
{% for b in blocks -%}
{% if b.kind == "heading" -%}
<h{{ b.level }} id="{{ b.id }}">{{ b.text | inline }}<a class="anchor" href="#{{ b.id }}">#</a></h{{ b.level }}>
{% elif b.kind == "paragraph" -%}
<p>{% for line in b["items"] %}{{ line | inline }}{% if not loop.last %}<br>
{% endif %}{% endfor %}</p>
{% elif b.kind == "list" -%}
<ul>
{% for item in b["items"] %}<li>{{ item | inline }}</li>
{% endfor %}</ul>
{% elif b.kind == "table" -%}
<p class="caption">{{ b.caption | inline }} ({% for label, href in b.links %}<a href="{{ href }}">{{ label }}</a>{% if not loop.last %}, {% endif %}{% endfor %})</p>
<div class="table-wrap">{{ b.html }}</div>
{% elif b.kind == "figure" -%}
<figure><img src="{{ b.src }}" alt="{{ b.alt }}"><figcaption>{{ b.caption | inline }} (<a href="{{ b.pdf }}">pdf</a>)</figcaption></figure>
{% endif -%}
{% endfor %}
<script>
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("thead th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var key = function (row) { var t = row.cells[col] ? row.cells[col].textContent.trim() : "";
        var x = parseFloat(t); return isNaN(x) || !/^[-+]?[0-9.]/.test(t) ? t : x; };
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        if (typeof x === typeof y) { return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }
        return (typeof x === "number" ? -1 : 1) * (asc ? 1 : -1); });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
</script>
</body>
</html>
"""


def inline(text: str) -> Markup:
    """A report sentence's Markdown (links, code, bold, italics) as escaped HTML."""
    out = str(escape(text))
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return Markup(out)


def table_html(df: pd.DataFrame, fmt: Callable, digits: int) -> Markup:
    """A table's HTML through pandas, each cell formatted as in the Markdown (``fmt``)."""
    shown = df.copy()
    shown.columns = [str(c) for c in shown.columns]
    for col in shown.columns:
        shown[col] = [fmt(v, digits) for v in shown[col]]
    links = shown.apply(lambda s: s.str.contains(r"\]\(#", regex=True)).any().any() if len(shown) else False
    if links:  # the verdict's evidence column: Markdown links to anchors
        shown = shown.map(lambda v: str(inline(v)))
    return Markup(shown.to_html(index=False, escape=not links, border=0, classes="sortable", na_rep="–"))


_ENV = Environment(autoescape=True, keep_trailing_newline=True)
_ENV.filters["inline"] = inline
_PAGE = _ENV.from_string(TEMPLATE)


def page(title: str, stamp: str, blocks: list[dict]) -> str:
    """The whole page from the writer's blocks."""
    return _PAGE.render(title=title, title_id=re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-"),
                        stamp=stamp, blocks=blocks)

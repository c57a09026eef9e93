"""The jinja2 environment the report pages are rendered with, and the static files they inline.

Autoescape is on for every template: whatever a page prints from a dataset or a record (prompts, ids,
error messages, editor configs) is escaped, since annotation files are third-party input and must not
be able to run script in the reader's browser. The only markup not escaped is the package's own CSS and
JS (``static/``), inlined so that a page needs no server and no network.
"""
from __future__ import annotations

import html
from functools import lru_cache
from importlib import resources

import jinja2

STATIC = "static"


class Safe(str):
    """Text that is markup already: autoescape leaves alone whatever has ``__html__`` (markupsafe's protocol)."""

    def __html__(self) -> str:
        return self


def _finalize(value):
    """Every ``{{ value }}``, before autoescape sees it: None prints nothing, and escaping spells quotes
    as ``&quot;`` / ``&#x27;`` (html.escape's spelling, which the report has always used) rather than
    markupsafe's ``&#34;`` / ``&#39;``. Markup (macros' output, the inlined static files) passes through."""
    if value is None:
        return ""
    if hasattr(value, "__html__"):
        return value
    return Safe(html.escape(str(value), quote=True))


@lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pie_bench.report", "templates"),
        autoescape=True,  # every template, whatever its extension
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the test suite instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["static"] = static
    return env


@lru_cache(maxsize=None)
def static(name: str) -> Safe:
    """The text of ``static/<name>``, to inline in a ``<style>`` or ``<script>`` element."""
    return Safe(resources.files("pie_bench.report").joinpath(STATIC, name).read_text(encoding="utf-8"))


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)

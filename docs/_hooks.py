"""Build-time parts of the reference site (mkdocs hooks, named in mkdocs.yml).

- The server page's routes are written from the app's own OpenAPI document, asked of the app in
  process: the page cannot drift from the routes, and the build needs no network or server.
- The load tests' plots (``load/results/*.png``) are published beside the page that shows them,
  from where the load scripts write them, rather than copied into ``docs/``; the load README
  is the load page's body.
- Sphinx roles in docstrings and click's "no default" sentinel are cleaned from the pages.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).parents[1]
ROUTES_MARKER = "<!-- routes from the OpenAPI document -->"
LOAD_MARKER = "<!-- load/README.md -->"
METHODS = ("get", "post", "put", "patch", "delete")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for plot in sorted((ROOT / "load" / "results").glob("*.png")):
        files.append(
            File.generated(config, f"load/results/{plot.name}", abs_src_path=str(plot.resolve()))
        )
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if ROUTES_MARKER in markdown:
        markdown = markdown.replace(ROUTES_MARKER, routes(openapi_document()))
    if LOAD_MARKER in markdown:
        markdown = markdown.replace(LOAD_MARKER, demoted((ROOT / "load" / "README.md").read_text()))
    return markdown


#: A Sphinx role left in a docstring (``:class:`Limiter```), as Markdown renders it.
SPHINX_ROLE = re.compile(r":(?:attr|class|const|data|exc|func|meth|mod|obj):<code>~?")


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    # The docstrings name other objects with Sphinx roles, which read here as plain code.
    html = SPHINX_ROLE.sub("<code>", html)
    # mkdocs-click's option tables show click's "no default given" sentinel by its repr.
    return html.replace("<td><code>Sentinel.UNSET</code></td>", "<td></td>")


def demoted(markdown: str) -> str:
    """A Markdown document one heading level down, to sit inside a page of its own title."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(out)


def openapi_document() -> dict[str, Any]:
    """``GET /openapi.json`` of an app with the default settings, in process."""
    from sim_server import ServerSettings, create_app

    app = create_app(ServerSettings(), backend="asyncio")

    async def ask() -> dict[str, Any]:
        answer = await app.test_client().get("/openapi.json")
        assert answer.status_code == 200, answer.status_code
        document: dict[str, Any] = json.loads(await answer.get_data(as_text=True))
        return document

    return asyncio.run(ask())


def routes(document: dict[str, Any]) -> str:
    """Markdown: one section per route and method, with its parameters and answers."""
    out: list[str] = []
    for path, operations in document["paths"].items():
        for method in METHODS:
            if method in operations:
                out += operation(method, path, operations[method], document)
    return "\n".join(out)


def operation(method: str, path: str, op: dict[str, Any], document: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    summary = text(op.get("summary", ""))
    description = text(op.get("description", ""))
    lines += [line for line in (summary, description) if line] + [""]
    parameters = op.get("parameters", [])
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if parameters:
        lines += ["| parameter | in | required | meaning |", "|---|---|---|---|"]
        for p in parameters:
            required = "yes" if p.get("required") else "no"
            meaning = cell(p.get("description", "") or kind(p.get("schema", {}), document))
            lines.append(f"| `{p['name']}` | {p['in']} | {required} | {meaning} |")
        lines.append("")
    if body:
        lines += [f"Body (JSON): {fields(body.get('schema', {}), document)}", ""]
    lines += ["| answer | body |", "|---|---|"]
    for code, answer in op.get("responses", {}).items():
        content = answer.get("content", {})
        media = next(iter(content), None)
        shown = fields(content[media].get("schema", {}), document) if media else ""
        if media and media != "application/json":
            shown = f"`{media}`"
        lines.append(f"| {code} | {cell(shown or text(answer.get('description', '')))} |")
    return [*lines, ""]


def resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def fields(schema: dict[str, Any], document: dict[str, Any]) -> str:
    """An object's fields, ``name`` (kind) each, required ones first; or the schema's kind."""
    schema = resolve(schema, document)
    properties = schema.get("properties")
    if not properties:
        return kind(schema, document)
    required = schema.get("required", [])
    names = [*required, *(n for n in properties if n not in required)]
    shown = []
    for name in names:
        optional = "" if name in required else ", optional"
        shown.append(f"`{name}` ({kind(properties[name], document)}{optional})")
    title = schema.get("title")
    return (f"{title}: " if title else "") + ", ".join(shown)


def kind(schema: dict[str, Any], document: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"].rsplit("/", 1)[-1])
    if "anyOf" in schema:
        return " or ".join(kind(s, document) for s in schema["anyOf"])
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    if schema.get("type") == "array":
        return f"list of {kind(schema.get('items', {}), document)}"
    return str(schema.get("type", "any"))


def text(value: str) -> str:
    """Docstring text as Markdown: reStructuredText's double backticks become single ones."""
    return " ".join(value.replace("``", "`").split())


def cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")

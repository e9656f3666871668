"""Local fixture servers on 127.0.0.1 speaking the real formats the night reads: arXiv's API (Atom with
arXiv's extensions), PyPI's JSON API and an OSV advisory file. Each records the paths it was asked for."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

ATOM_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
             'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" xmlns:arxiv="http://arxiv.org/schemas/atom">'
             '<title type="html">ArXiv Query</title><id>http://arxiv.org/api/fixture</id>'
             '<opensearch:totalResults>{n}</opensearch:totalResults>')


def arxiv_entry(ident: str, title: str, abstract: str, categories: list[str], published: datetime) -> str:
    cats = "".join(f'<category term="{c}" scheme="http://arxiv.org/schemas/atom"/>' for c in categories)
    return (f"<entry><id>http://arxiv.org/abs/{ident}v1</id><updated>{published:%Y-%m-%dT%H:%M:%SZ}</updated>"
            f"<published>{published:%Y-%m-%dT%H:%M:%SZ}</published><title>{escape(title)}</title>"
            f"<summary>{escape(abstract)}</summary><author><name>A. Researcher</name></author>"
            f'<link href="http://arxiv.org/abs/{ident}v1" rel="alternate" type="text/html"/>'
            f'<link title="pdf" href="http://arxiv.org/pdf/{ident}v1" rel="related" type="application/pdf"/>'
            f'<arxiv:primary_category term="{categories[0]}" scheme="http://arxiv.org/schemas/atom"/>{cats}</entry>')


def arxiv_feed(entries: list[str]) -> bytes:
    return (ATOM_HEAD.format(n=len(entries)) + "".join(entries) + "</feed>").encode()


def pypi_release(version: str, uploaded: datetime, *, yanked: str | None = None) -> list[dict]:
    """One release's files as PyPI lists them under `releases`."""
    return [{"filename": f"pkg-{version}-py3-none-any.whl", "packagetype": "bdist_wheel",
             "upload_time_iso_8601": uploaded.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "yanked": yanked is not None,
             "yanked_reason": yanked, "digests": {"sha256": "0" * 64}, "size": 1000}]


def pypi_project(name: str, latest: str, releases: dict[str, list[dict]], description: str = "",
                 changelog: str | None = None) -> dict:
    """A project as PyPI's JSON API answers GET /pypi/<name>/json."""
    urls = {"Homepage": f"https://example.org/{name}"} | ({"Changelog": changelog} if changelog else {})
    return {"info": {"name": name, "version": latest, "summary": f"{name}, a package", "description": description,
                     "project_urls": urls, "yanked": False, "yanked_reason": None},
            "releases": releases, "urls": releases.get(latest, []), "vulnerabilities": []}


def osv_advisory(ident: str, package: str, introduced: str, fixed: str, summary: str) -> dict:
    """One advisory in OSV's schema, PyPI ecosystem, an ECOSYSTEM range."""
    return {"schema_version": "1.6.0", "id": ident, "modified": "2030-01-01T00:00:00Z", "aliases": [f"CVE-{ident}"],
            "summary": summary, "details": summary,
            "affected": [{"package": {"ecosystem": "PyPI", "name": package},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}]}]}


class FixtureServer:
    """Serves `routes` ({path: (content type, bytes)}) on 127.0.0.1; unknown paths answer 404."""

    def __init__(self, routes: dict[str, tuple[str, bytes]]) -> None:
        self.routes, self.requests = routes, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                server.requests.append({"path": parts.path, "query": parse_qs(parts.query)})
                found = server.routes.get(parts.path)
                body = found[1] if found else b'{"message": "Not Found"}'
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", found[0] if found else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FixtureServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def night_routes(now: datetime | None = None) -> dict[str, tuple[str, bytes]]:
    """The external world of a test night: three arXiv papers, two PyPI projects (a yanked pin, a new
    release with notes), and one OSV advisory for a pinned version."""
    now = now or datetime.now(UTC)
    papers = [
        arxiv_entry("2901.00001", "LoRA adapters for quantised models", "We train LoRA adapters on 4-bit models.",
                    ["cs.LG", "cs.CL"], now - timedelta(hours=5)),
        arxiv_entry("2901.00002", "A survey of graph coloring", "Nothing about adapters.", ["cs.DM"],
                    now - timedelta(days=3)),
        arxiv_entry("2901.00003", "Speculative decoding on one GPU", "Faster decoding with LoRA drafts.",
                    ["cs.CL"], now - timedelta(days=1)),
    ]
    requests_doc = pypi_project("requests", "2.32.3", {
        "2.19.0": pypi_release("2.19.0", now - timedelta(days=2000), yanked="CVE-2018-18074: credentials leak"),
        "2.32.3": pypi_release("2.32.3", now - timedelta(hours=3)),
    }, description="Release History\n\n2.32.3 (2030-01-01)\n-------------------\n\n- Fixed proxy auth on redirects.\n",
        changelog="https://example.org/requests/HISTORY.md")
    urllib3_doc = pypi_project("urllib3", "1.26.5", {
        "1.26.4": pypi_release("1.26.4", now - timedelta(days=900)),
        "1.26.5": pypi_release("1.26.5", now - timedelta(days=800)),
    })
    advisories = [osv_advisory("PYSEC-2021-108", "urllib3", "0", "1.26.5", "ReDoS in URL authority parsing")]
    return {
        "/api/query": ("application/atom+xml", arxiv_feed(papers)),
        "/pypi/requests/json": ("application/json", json.dumps(requests_doc).encode()),
        "/pypi/urllib3/json": ("application/json", json.dumps(urllib3_doc).encode()),
        "/osv/advisories.json": ("application/json", json.dumps(advisories).encode()),
    }

"""Research feeds: RSS, Atom and JSON, from files and over real HTTP; new items only; a bad feed is
reported without hiding the others."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from forge_dagster.core.nightly.research import parse_feed, scan_feeds

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Lab notes</title>
  <entry><id>urn:uuid:1</id><title>Distilling a 7B model</title>
    <link rel="alternate" href="https://lab.example/distill"/><updated>2030-01-01T00:00:00Z</updated>
    <summary>Notes on distillation.</summary></entry>
  <entry><id>urn:uuid:2</id><title>GPU memory budgets</title><link href="https://lab.example/gpu"/></entry>
</feed>"""

RSS1 = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
  <item rdf:about="https://old.example/1"><title>An RSS 1.0 item</title><link>https://old.example/1</link></item>
</rdf:RDF>"""


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on 127.0.0.1 serving `tmp_path/www`."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_atom_rss1_and_json_list_feeds_parse_into_items():
    atom = parse_feed("lab", ATOM.encode())
    assert [(i.item_id, i.title, i.link) for i in atom] == [
        ("urn:uuid:1", "Distilling a 7B model", "https://lab.example/distill"),
        ("urn:uuid:2", "GPU memory budgets", "https://lab.example/gpu")]
    assert atom[0].summary == "Notes on distillation."
    assert [i.item_id for i in parse_feed("old", RSS1.encode())] == ["https://old.example/1"]
    listed = parse_feed("list", b'[{"title": "No id, but a link", "link": "https://x/1"}, {"title": "Bare"}]')
    assert [i.item_id for i in listed][0] == "https://x/1" and len(listed) == 2


def test_scan_reads_urls_keeps_only_new_items_and_reports_broken_feeds(store, http_folder, tmp_path):
    www, base = http_folder
    (www / "atom.xml").write_text(ATOM)
    (www / "broken.xml").write_text("<rss><channel><item>")
    sources = [f"{base}/atom.xml", f"{base}/broken.xml", f"{base}/missing.xml"]
    first = scan_feeds(sources, store.knowledge, "2030-03-01")
    assert [i.title for i in first.new_items] == ["Distilling a 7B model", "GPU memory budgets"]
    assert set(first.errors) == {f"{base}/broken.xml", f"{base}/missing.xml"}
    assert "404" in first.errors[f"{base}/missing.xml"]

    (www / "atom.xml").write_text(ATOM.replace("</feed>", "<entry><id>urn:uuid:3</id><title>Speculative "
                                                          "decoding</title></entry></feed>"))
    second = scan_feeds(sources[:1], store.knowledge, "2030-03-02")
    assert [i.title for i in second.new_items] == ["Speculative decoding"]
    assert second.seen == 2 and second.errors == {}

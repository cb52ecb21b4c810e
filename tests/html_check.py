"""A strict-enough HTML check for the reports: every tag closed in order, images decodable PNGs."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

VOID = {"meta", "img", "br", "hr", "link", "input"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ReportParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[bytes] = []
        self.tags: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            src = dict(attrs).get("src") or ""
            prefix = "data:image/png;base64,"
            if not src.startswith(prefix):
                self.errors.append(f"img not an inline PNG: {src[:40]!r}")
            else:
                self.images.append(base64.b64decode(src[len(prefix) :], validate=True))
        elif tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_report(text: str) -> ReportParser:
    """Parse `text`; fail on unbalanced tags, non-PNG images or a missing <html>/<body>/<title>."""
    p = ReportParser()
    p.feed(text)
    p.close()
    assert not p.errors, p.errors
    assert not p.stack, f"unclosed tags: {p.stack}"
    for tag in ("html", "head", "title", "body", "h1"):
        assert p.tags.get(tag), f"no <{tag}>"
    for png in p.images:
        assert png.startswith(PNG_MAGIC) and len(png) > 500
    return p

"""HTML to plain text with the standard library's parser (`html.parser`): no dependency.

What a reader sees is kept: the text of the body and the title, entities decoded, one line
per block element (paragraphs, headings, list items, table rows, ``<br>``), cells separated
by a tab. Scripts, styles, templates, ``<head>`` metadata and comments are dropped.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

_SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_BLOCK = {
    "address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table",
    "title", "tr", "ul",
}
_CELL = {"td", "th"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}
_SPACES = re.compile(r"[ \t\r\f\v]+")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping: list[str] = []  # open tags whose content is dropped
        self.pre = 0  # inside <pre>: whitespace kept

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self.skipping == ["head"]:
            self.skipping.pop()  # the title is the one part of <head> a reader sees
            self.skipping.append("head*")
        elif self.skipping or tag in _SKIP:
            if tag not in _VOID:
                self.skipping.append(tag)
            return
        if tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        elif tag in _CELL:
            self.parts.append("\t")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == "title" and self.skipping[-1] == "head*":
                self.skipping[-1] = "head"
                self.parts.append("\n")
                return
            if tag in self.skipping:  # close up to the matching tag (forgiving bad nesting)
                while self.skipping and self.skipping.pop().rstrip("*") != tag:
                    pass
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skipping and self.skipping[-1] != "head*":
            return
        self.parts.append(data if self.pre else _SPACES.sub(" ", data.replace("\n", " ")))


def html_to_text(source: str) -> str:
    """The readable text of an HTML document or fragment (see the module's docstring).

    Malformed HTML is read as well as browsers would read it, never an error; text without
    any tag comes back with its whitespace normalised.
    """
    parser = _Text()
    parser.feed(source)
    parser.close()
    lines = [line.strip(" \t") for line in "".join(parser.parts).split("\n")]
    out: list[str] = []
    for line in lines:
        if line.strip() or (out and out[-1]):
            out.append(line if line.strip() else "")
    return "\n".join(out).strip()

"""A tiny HTML page builder: inline CSS, escaped text, tables, notes, embedded images.

Every report is one self-contained file: no scripts, no web fonts, no external links, so it
opens from disk with no server and no internet.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from hardenkit.imageio import atomic_write_text

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 24px auto; max-width: 1180px; padding: 0 16px; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.sub { color: #555; margin-top: 0; }
nav a { margin-right: 14px; color: #0b62a4; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.92em; }
th, td { border: 1px solid #d0d0d0; padding: 4px 9px; text-align: right; vertical-align: middle; }
th { background: #f3f4f6; }
td.l, th.l { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; margin: 8px 0;
        color: #5a4a00; }
.missing { display: block; margin: auto; width: 160px; height: 160px; background: #eee; color: #777;
           border: 1px dashed #aaa; font-size: 0.8em; padding: 6px; box-sizing: border-box;
           text-align: center; overflow: hidden; word-break: break-all; }
img.plot { max-width: 100%; border: 1px solid #eee; }
img.thumb { width: 160px; height: 160px; object-fit: contain; background: #f4f4f4; display: block;
            margin: auto; }
.scroll { overflow-x: auto; max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; padding: 6px; border: 1px solid #e3e3e3; background: #fcfcfc; }
figcaption { font-size: 0.82em; color: #333; max-width: 420px; word-break: break-all; }
.pair { display: flex; gap: 6px; }
.pair div { text-align: center; font-size: 0.75em; color: #666; }
""".strip()


def esc(value: Any) -> str:
    """HTML-escape any value's ``str``."""
    return html.escape(str(value), quote=True)


def is_missing(value: Any) -> bool:
    """None or NaN: a metric that could not be computed."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage string; ``-`` when missing."""
    return num(value, digits, scale=100.0, suffix="%")


def num(value: Any, digits: int = 3, scale: float = 1.0, suffix: str = "") -> str:
    """A number (times ``scale``) with ``digits`` decimals and ``suffix``; ``-`` when missing."""
    if is_missing(value):
        return "-"
    try:
        return f"{scale * float(value):.{digits}f}{suffix}"
    except (TypeError, ValueError):
        return esc(value)


def data_uri(raw: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for embedding bytes in the page."""
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def img(uri: str, alt: str, cls: str = "thumb") -> str:
    """An ``<img>`` element for an embedded image."""
    return f'<img class="{cls}" src="{uri}" alt="{esc(alt)}">'


def placeholder(reason: str) -> str:
    """The box shown instead of an image that cannot be read."""
    return f'<div class="missing">image unavailable<br>{esc(reason)}</div>'


def note(text: str) -> str:
    """A short highlighted note (e.g. why a section is empty)."""
    return f'<p class="note">{esc(text)}</p>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], table_id: str,
          left: Sequence[int] = (0,)) -> str:
    """A table; cells are trusted HTML (escape text with :func:`esc` first).

    Args:
        header: Column titles (plain text, escaped here).
        rows: Rows of HTML cell contents.
        table_id: The ``id`` attribute (tests and readers find the table by it).
        left: Indices of left-aligned columns. Defaults to the first.
    """
    def cls(i: int) -> str:
        return ' class="l"' if i in left else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table id="{esc(table_id)}">\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody>\n</table></div>")


def kv_table(items: dict[str, Any], table_id: str) -> str:
    """A two-column key/value table (nested values shown compactly)."""
    rows = [[f"<code>{esc(k)}</code>", esc(_compact(v))] for k, v in items.items()]
    return table(["key", "value"], rows, table_id, left=(0, 1))


def _compact(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_compact(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_compact(x) for x in v)
    return "-" if v is None else str(v)


def section(anchor: str, title: str, *parts: str) -> str:
    """A titled section with an anchor for the navigation bar."""
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document.

    Args:
        title: Page title and heading.
        subtitle: One line under the heading.
        sections: ``(anchor, title, html)`` triples, in order.
    """
    nav = " ".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "\n".join(section(a, t, h) for a, t, h in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
            f"<h1>{esc(title)}</h1>\n<p class=\"sub\">{esc(subtitle)}</p>\n<nav>{nav}</nav>\n"
            f"{body}\n</body>\n</html>\n")


def write_page(path: Path, text: str) -> None:
    """Write the page atomically, readable like any file the user creates.

    The atomic temp file is created private (0600); a report is meant to be shared, so the
    final mode follows the umask instead.
    """
    atomic_write_text(path, text)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)

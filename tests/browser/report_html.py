"""HTML checks for the report pages: what a page links to and what it would load."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path


class Refs(HTMLParser):
    """Every URL an HTML page refers to, split into links and loaded resources."""

    LOADS = {("script", "src"), ("img", "src"), ("iframe", "src"), ("embed", "src"), ("source", "src"),
             ("video", "src"), ("audio", "src"), ("object", "data"), ("input", "src")}

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.resources: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self._style = False
        self.css: list[str] = []
        self.scripts: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "link" and a.get("href"):
            self.resources.append((tag, a["href"]))   # stylesheet, icon, preload, module ...
        for t, attr in self.LOADS:
            if tag == t and a.get(attr):
                self.resources.append((tag, a[attr]))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if a.get("style"):
            self.css.append(a["style"])
        self._style, self._script = tag == "style", tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._style = self._script = False

    def handle_data(self, data: str) -> None:
        if self._style:
            self.css.append(data)
        elif self._script:
            self.scripts.append(data)
        else:
            self.text.append(data)


def parse(path: Path) -> Refs:
    p = Refs()
    p.feed(path.read_text())
    return p


def is_remote(url: str) -> bool:
    return bool(re.match(r"^\s*(https?:)?//", url, re.I))


def external_loads(page: Path) -> list[str]:
    """What a page would fetch from the network: tags, CSS url()/@import, JS imports."""
    refs = parse(page)
    bad = [f"<{tag}> {url}" for tag, url in refs.resources if is_remote(url)]
    for css in refs.css:
        css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)   # URLs in CSS comments load nothing
        bad += [f"css {u}" for u in re.findall(r"""url\(\s*['"]?([^'")]+)""", css) if is_remote(u)]
        bad += [f"css @import {u}" for u in re.findall(r"""@import\s+['"]([^'"]+)""", css) if is_remote(u)]
    for js in refs.scripts:
        # import ... from "https://...", import("https://..."), or any remote script URL
        bad += [f"js {u}" for u in re.findall(r"""['"]((?:https?:)?//[^'"]+\.m?js(?:\?[^'"]*)?)['"]""", js)]
    return bad


def png_data(data_uri: str) -> bytes:
    assert data_uri.startswith("data:image/png;base64,"), data_uri[:60]
    return base64.b64decode(data_uri.split(",", 1)[1], validate=True)


def pixels_near(png: Path, rgb: tuple[int, int, int], tol: int) -> int:
    """How many pixels of the screenshot ``png`` lie within ``tol`` of ``rgb`` on every
    channel (counted with numpy: a 1200x5200 screenshot took ~10 s of CPU per colour in a
    Python loop).

    Example:
        >>> pixels_near(shot, (44, 160, 44), tol=40)   # doctest: +SKIP
        1874
    """
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.int16)
    return int((np.abs(px - np.array(rgb, dtype=np.int16)) <= tol).all(axis=-1).sum())

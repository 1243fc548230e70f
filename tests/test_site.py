"""The built website, tested in a real browser (headless Chromium over the DevTools protocol).

Runs against an already built site: ``$IGBOOK_SITE`` or ``_build/html`` (``make test-book``
builds it). Without the site or without Chromium these tests are skipped with the reason,
except in CI (``CI=true``), where that is a failure.

For every page: no JavaScript errors or failed loads, no request leaves the machine (the site
works offline), MathJax typeset every formula without errors, every image and animation frame
loads, every output is visible (an ipywidgets explorer is replaced by a visible note), no
unresolved cross-reference. Across pages: internal links and anchors resolve; the notebook
download button saves an ``.ipynb`` file; launch buttons point at this repository's notebooks
and the CPU-only Binder environment. Screenshots in the light and dark themes go to
``$IGBOOK_SCREENSHOTS`` (default: ``screenshots/`` beside the site) and text contrast is checked
on both themes.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("IGBOOK_SITE", ROOT / "_build" / "html")).resolve()
SHOTS = Path(os.environ.get("IGBOOK_SCREENSHOTS", SITE.parent / "screenshots")).resolve()
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,900",
]
WIDTH, HEIGHT = 1280, 900


def _unavailable(reason: str) -> None:
    """Skip locally; fail in CI, where the site and the browser must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
    pytest.skip(reason)


def _is_redirect(path: Path) -> bool:
    return 'http-equiv="Refresh"' in path.read_text(errors="replace")[:2000]


def site_pages() -> list[str]:
    """Every HTML page of the site (relative paths), except assets and redirect stubs."""
    if not (SITE / "index.html").exists():
        return []
    skip = ("_static/", "_sources/", "_images/", "_downloads/")
    pages = [p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")]
    return sorted(p for p in pages if not p.startswith(skip) and not _is_redirect(SITE / p))


PAGES = site_pages()
NOTEBOOK_PAGES = [p for p in PAGES if (ROOT / p).with_suffix(".ipynb").exists()]


def chromium_executable() -> str | None:
    for name in (
        os.environ.get("IGBOOK_CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


# --------------------------------------------------------------------------------------------
# a local web server for the site, and a minimal DevTools-protocol client
# --------------------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".ipynb": "application/json",
        ".js": "text/javascript",
        ".woff": "font/woff",
    }

    def log_message(self, *args: Any) -> None:
        pass


class Server:
    """Serves the site on 127.0.0.1 (a static host, as the published site will have)."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Browser:
    """Headless Chromium driven over the Chrome DevTools Protocol (one page, one websocket)."""

    def __init__(self, exe: str, workdir: Path) -> None:
        import websocket  # websocket-client

        self.profile = workdir / "profile"
        self.downloads = workdir / "downloads"
        self.downloads.mkdir(parents=True)
        self.log = open(workdir / "chromium.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                exe,
                *CHROME_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(
                    f"Chromium did not start: {(workdir / 'chromium.log').read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read()
        )
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True, enable_multithread=False
        )
        self.ids = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )

    def close(self) -> None:
        try:
            if hasattr(self, "ws"):
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.log.close()

    def _recv(self, timeout: float) -> dict[str, Any]:
        self.ws.settimeout(max(timeout, 0.01))
        return json.loads(self.ws.recv())

    def send(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.ids += 1
        me = self.ids
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(deadline - time.monotonic())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, name: str, timeout: float = 30, since: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for ev in self.events[seen:]:
                if ev["method"] == name:
                    return ev
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} within {timeout} s")
            import websocket

            try:
                msg = self._recv(left)
            except websocket.WebSocketTimeoutException:
                continue
            if "method" in msg:
                self.events.append(msg)

    def goto(self, url: str, timeout: float = 30) -> int:
        """Navigate, and wait until that document has loaded; returns the index of its first event."""
        start = len(self.events)
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                res = self.send(
                    "Runtime.evaluate",
                    expression="document.readyState + ' ' + location.href",
                    returnByValue=True,
                )
                state, href = res["result"]["value"].split(" ", 1)
            except (RuntimeError, KeyError):  # the old document went away mid-call
                state, href = "", ""
            if state == "complete" and href.split("#")[0] == url.split("#")[0]:
                return start
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not load within {timeout} s")

    def js(self, expression: str, timeout: float = 60) -> Any:
        res = self.send(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


@pytest.fixture(scope="session")
def site() -> Path:
    if not (SITE / "index.html").exists():
        _unavailable(
            f"the website is not built at {SITE} (run `make test-book`, or set IGBOOK_SITE)"
        )
    return SITE


@pytest.fixture(scope="session")
def server(site: Path):  # type: ignore[no-untyped-def]
    srv = Server(site)
    yield srv
    srv.close()


def chromium_session(what: str, prefix: str = "igbook-chromium-"):  # type: ignore[no-untyped-def]
    """A headless Chromium for a fixture to yield (skip locally, fail in CI, when unavailable);
    ``what`` says what goes untested without it. Closed and its profile removed afterwards."""
    exe = chromium_executable()
    if exe is None:
        _unavailable(f"Chromium is not installed (Debian: apt-get install chromium), so {what}")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _unavailable("websocket-client is not installed (pip install -r requirements.txt)")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    b = Browser(exe, work)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(site: Path):  # type: ignore[no-untyped-def]
    yield from chromium_session("the site is not tested in a browser")


# --------------------------------------------------------------------------------------------
# the in-page audit
# --------------------------------------------------------------------------------------------

AUDIT_JS = r"""
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const out = {problems: {}};
  const add = (kind, what) => { (out.problems[kind] = out.problems[kind] || []).push(String(what).slice(0, 300)); };
  // MathJax: wait for the first typesetting pass
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    const done = await Promise.race([MathJax.startup.promise.then(() => true), sleep(20000).then(() => false)]);
    if (!done) add("mathjax", "MathJax did not finish typesetting within 20 s");
  }
  const mathEls = Array.from(document.querySelectorAll(".math"));
  out.formulas = mathEls.length;
  if (mathEls.length && !(window.MathJax && MathJax.version)) add("mathjax", "the page has formulas but MathJax did not load");
  out.mathjaxVersion = (window.MathJax && MathJax.version) || null;
  for (const el of mathEls) {
    if (!el.querySelector("mjx-container")) add("mathjax", "not typeset: " + el.textContent.trim());
  }
  for (const el of document.querySelectorAll("mjx-merror, [data-mjx-error]")) {
    const c = el.closest("mjx-container");
    add("mathjax", "TeX error: " + (el.getAttribute("data-mjx-error") || el.textContent));
  }
  try {
    for (const item of MathJax.startup.document.math) {
      item.root.walkTree((node) => {
        if (node.isKind("merror")) add("mathjax", "TeX error in: " + item.math);
        if (node.isKind("mtext") && node.attributes.get("mathcolor") === "red" && /^\\/.test(node.getText ? node.getText() : "")) {
          add("mathjax", "undefined macro " + node.getText() + " in: " + item.math);
        }
      });
    }
  } catch (e) { /* no MathJax on this page */ }
  // images: wait until each has loaded or failed
  const imgs = Array.from(document.images);
  await Promise.race([
    Promise.all(imgs.map((im) => im.complete ? null : new Promise((r) => { im.addEventListener("load", r); im.addEventListener("error", r); }))),
    sleep(15000),
  ]);
  out.images = imgs.length;
  // figures drawn by the chapter's code (not logos or launch badges), outside animations
  out.figures = Array.from(document.querySelectorAll(".cell_output img")).filter((im) => !im.closest("div.animation")).length;
  // a Markdown result table printed by a cell must render as a table, not as a paragraph of pipes
  for (const p of document.querySelectorAll(".cell_output p")) {
    if (/^\s*\|.*\|\s*$/m.test(p.textContent) && /\|\s*:?-{3,}/.test(p.textContent)) add("tables", "Markdown table shown as text: " + p.textContent.trim().slice(0, 80));
  }
  for (const im of imgs) {
    if (im.closest(".animation")) continue;
    if (!(im.complete && im.naturalWidth > 0)) add("images", "did not load: " + (im.getAttribute("src") || "(no src)").slice(0, 120));
  }
  // pre-rendered animations (matplotlib to_jshtml): a frame shows, and the slider changes it
  const anims = Array.from(document.querySelectorAll("div.animation"));
  out.animations = anims.length;
  for (const a of anims) {
    const im = a.querySelector("img"), sl = a.querySelector("input[type=range]");
    if (!im || !(im.naturalWidth > 0)) { add("animations", "animation frame did not load"); continue; }
    if (!sl || !(parseInt(sl.max) > 0)) { add("animations", "animation has no frames to scrub"); continue; }
    const before = im.src; sl.value = 1; sl.dispatchEvent(new Event("input"));
    await sleep(50);
    if (im.src === before) add("animations", "moving the slider did not change the frame");
    sl.value = 0; sl.dispatchEvent(new Event("input"));
  }
  // outputs: every output of a visible cell is visible; widgets have their note
  const visible = (el) => el.getClientRects().length > 0;
  const outputs = Array.from(document.querySelectorAll(".cell_output"));
  out.outputs = outputs.length;
  for (const o of outputs) {
    const cell = o.closest(".cell");
    if (cell && !visible(cell)) continue;
    if (o.closest("details:not([open]), .toggle-hidden, .tag_hide-output, .tag_remove-output")) continue;
    if (o.getBoundingClientRect().height < 4) add("outputs", "invisible output after: " + ((cell && cell.querySelector("pre")) ? cell.querySelector("pre").textContent.trim().slice(0, 80) : "?"));
  }
  const widgets = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  out.widgets = widgets.length;
  const notes = Array.from(document.querySelectorAll(".igbook-widget-fallback")).filter((n) => visible(n) && n.getBoundingClientRect().height > 10);
  if (notes.length < widgets.length) add("widgets", `${widgets.length} widget outputs but only ${notes.length} visible fallback notes`);
  if (widgets.length && !(document.querySelector(".cell_output img") || anims.length)) add("widgets", "a page with a widget shows no static figure or animation");
  // cross-references that did not resolve
  // the book's own references (documents, labels, equations, exercises, igbook API); references
  // to Python builtins and torch are left unlinked on purpose (nitpick_ignore, no intersphinx)
  for (const x of document.querySelectorAll(".xref, .pending_xref")) {
    if (x.closest("a, table.modindextable, table.genindextable")) continue;
    const own = x.matches(".std, .myst, .eq, .doc, .ref, .numref, .prf, .exercise, .solution") || /^igbook\b/.test(x.textContent.trim());
    if (own) add("xrefs", "unresolved reference: " + x.textContent.trim());
  }
  for (const a of document.querySelectorAll("article a")) {
    if (/^\?\?$|^\[\?\]$/.test(a.textContent.trim())) add("xrefs", "unresolved reference shown as " + a.textContent.trim());
  }
  // exercises: every solution starts hidden behind its toggle (sphinx-togglebutton)
  const sols = Array.from(document.querySelectorAll("div.solution"));
  out.solutions = sols.length;
  out.exercises = document.querySelectorAll("div.exercise").length;
  for (const sol of sols) {
    const body = Array.from(sol.children).filter((c) => !c.matches(".admonition-title, button, .toggle-button"));
    const shown = body.some((c) => c.getClientRects().length > 0 && c.getBoundingClientRect().height > 0);
    const title = (sol.querySelector(".admonition-title") || sol).textContent.trim().slice(0, 60);
    if (shown || !sol.querySelector("button.toggle-button, .toggle-button")) add("solutions", "solution not hidden behind a toggle: " + title);
  }
  // launch and download buttons
  const dl = document.querySelector("a.btn-download-source-button");
  out.download = dl ? {href: dl.href, download: dl.getAttribute("download"), target: dl.getAttribute("target")} : null;
  out.binder = Array.from(document.querySelectorAll(".dropdown-launch-buttons a")).map((a) => a.href).filter((h) => /binder/.test(h));
  out.thebe = !!document.querySelector(".btn-launch-thebe") && !!document.querySelector('script[type="text/x-thebe-config"]');
  return out;
})()
"""


def _event_problems(events: list[dict[str, Any]], base: str) -> dict[str, list[str]]:
    """JavaScript errors, console errors, failed loads and requests that leave the machine."""
    out: dict[str, list[str]] = {}
    requests: dict[str, str] = {}

    def add(kind: str, what: str) -> None:
        out.setdefault(kind, []).append(what[:300])

    for ev in events:
        m, p = ev["method"], ev.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            desc = (d.get("exception") or {}).get("description") or d.get("text", "")
            add(
                "javascript errors",
                f"{desc.splitlines()[0] if desc else d.get('text')} ({d.get('url', '')}:{d.get('lineNumber', '')})",
            )
        elif m == "Runtime.consoleAPICalled" and p.get("type") in {"error", "assert"}:
            args = " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])
            )
            add("console errors", args)
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            e = p["entry"]
            add("console errors", f"{e.get('text', '')} {e.get('url', '')}".strip())
        elif m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            requests[p["requestId"]] = url
            if not url.startswith((base, "data:", "blob:", "about:", "chrome-extension:")):
                add("requests leaving the machine", url)
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            add("failed loads", f"{requests.get(p['requestId'], '?')}: {p.get('errorText', '')}")
        elif m == "Network.responseReceived":
            r = p["response"]
            if r.get("status", 200) >= 400:
                add("failed loads", f"{r.get('url')}: HTTP {r.get('status')}")
    return out


_AUDITS: dict[str, dict[str, Any]] = {}


def audit(browser: Browser, server: Server, page: str) -> dict[str, Any]:
    """Load ``page``, run the in-page audit, and collect what the browser reported."""
    if page not in _AUDITS:
        start = browser.goto(server.base + page)
        result = browser.js(AUDIT_JS, timeout=90)
        time.sleep(0.1)  # late console messages
        browser.send("Runtime.evaluate", expression="0")
        result["problems"].update(_event_problems(browser.events[start:], server.base))
        _AUDITS[page] = result
    return _AUDITS[page]


def _report(page: str, problems: dict[str, list[str]]) -> str:
    lines = [f"{page}:"]
    for kind, items in problems.items():
        lines.append(f"  {kind} ({len(items)}):")
        lines += [f"    - {x}" for x in items[:15]]
        if len(items) > 15:
            lines.append(f"    ... and {len(items) - 15} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_site_is_built(site: Path) -> None:
    assert PAGES, f"no HTML pages under {site}"
    toc_pages = {f"{f}.html" for f in _toc_files()}
    missing = sorted(p for p in toc_pages if p not in PAGES)
    assert not missing, f"pages in _toc.yml that the site lacks: {missing}"


def _toc_files() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                out.append(str(node["file"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc.get("parts", toc.get("chapters", [])))
    return out


@pytest.mark.browser
@pytest.mark.parametrize("page", PAGES)
def test_page_in_browser(browser: Browser, server: Server, page: str) -> None:
    """No errors, offline, formulas typeset, images/animations load, outputs visible, refs resolve."""
    result = audit(browser, server, page)
    assert not result["problems"], _report(page, result["problems"])
    if result["formulas"]:
        assert result["mathjaxVersion"] and result["mathjaxVersion"].startswith("3."), result[
            "mathjaxVersion"
        ]


@pytest.mark.browser
def test_chapters_have_formulas_and_figures(browser: Browser, server: Server) -> None:
    """The audit sees what a chapter must have (so that an audit that sees nothing cannot pass)."""
    if not NOTEBOOK_PAGES:
        pytest.skip("no chapter pages in the site yet")
    for page in NOTEBOOK_PAGES:
        r = audit(browser, server, page)
        assert r["formulas"] >= 5, f"{page}: only {r['formulas']} formulas found"
        shows = _figure_cells(page)
        assert r["figures"] >= shows, (
            f"{page}: {shows} cells call plt.show() but only {r['figures']} figures are on the page"
        )
        assert r["figures"] + r["animations"] >= 1, f"{page}: no figure found"
        assert r["outputs"] >= 1, f"{page}: no cell outputs (was the chapter executed?)"
        assert r["exercises"] >= 3 and r["solutions"] >= r["exercises"], (
            f"{page}: {r['exercises']} exercises, {r['solutions']} solutions"
        )


def _figure_cells(page: str) -> int:
    """Code cells of the chapter's notebook that call ``plt.show()`` (each shows at least one figure)."""
    nb = json.loads((ROOT / page).with_suffix(".ipynb").read_text())
    return sum(
        1 for c in nb["cells"] if c["cell_type"] == "code" and "plt.show(" in "".join(c["source"])
    )


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(str(a[key]))
        for key in ("href", "src"):
            if tag in {"a", "link", "img", "script", "source", "iframe"} and a.get(key):
                self.links.append(str(a[key]))


@functools.cache
def _parse(path: Path) -> _Anchors:
    p = _Anchors()
    p.feed(path.read_text(errors="replace"))
    return p


@pytest.mark.browser
def test_internal_links_resolve(site: Path) -> None:
    """Every local href/src points at an existing file, and every #fragment at an existing id."""
    broken = []
    for page in PAGES:
        src = site / page
        for link in _parse(src).links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme or link.startswith(("//", "mailto:", "javascript:")):
                continue
            target = (
                (src.parent / urllib.parse.unquote(parts.path)).resolve() if parts.path else src
            )
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page}: {link} (no such file)")
                continue
            if (
                parts.fragment
                and target.suffix == ".html"
                and parts.fragment not in _parse(target).ids
            ):
                broken.append(f"{page}: {link} (no anchor #{parts.fragment})")
    assert not broken, "broken internal links:\n" + "\n".join(sorted(set(broken))[:50])


@pytest.mark.browser
def test_launch_buttons(browser: Browser, server: Server) -> None:
    """Binder opens this chapter's notebook in JupyterLab; Live Code (Thebe) as _config.yml says."""
    if not NOTEBOOK_PAGES:
        pytest.skip("no chapter pages in the site yet")
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = re.sub(r"^https://github.com/|/$|\.git$", "", cfg["repository"]["url"])
    branch = cfg["repository"].get("branch", "main")
    for page in NOTEBOOK_PAGES:
        r = audit(browser, server, page)
        nb = Path(page).with_suffix(".ipynb").as_posix()
        expected = f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=lab/tree/{nb}"
        assert expected in r["binder"], f"{page}: Binder links {r['binder']}, expected {expected}"
        assert (ROOT / nb).exists(), (
            f"the Binder link of {page} opens {nb}, which is not in the repository"
        )
        thebe = bool(cfg.get("launch_buttons", {}).get("thebe"))  # off: Thebe would load from a CDN
        assert r["thebe"] == thebe, (
            f"{page}: Live Code (Thebe) is {'missing' if thebe else 'offered although _config.yml switches it off'}"
        )


def test_binder_environment_is_cpu_only() -> None:
    """Binder has no GPU: the environment must not pull the multi-GB CUDA build of torch."""
    req = (ROOT / "binder" / "requirements.txt").read_text()
    torch_lines = [ln for ln in req.splitlines() if re.match(r"\s*torch\b", ln)]
    assert torch_lines, "binder/requirements.txt does not install torch"
    assert all("+cpu" in ln for ln in torch_lines) and "download.pytorch.org/whl/cpu" in req, (
        torch_lines
    )
    assert re.search(r"^-e \.$|^\.$", req, re.MULTILINE), (
        "binder/requirements.txt does not install igbook"
    )


def test_binder_post_build_opens_markdown_rendered(tmp_path: Path) -> None:
    """Launch links to Markdown pages must not open them as source text: postBuild makes the
    Markdown preview JupyterLab's default viewer (run here with a scratch HOME)."""
    env = {**os.environ, "HOME": str(tmp_path)}
    subprocess.run(["bash", str(ROOT / "binder" / "postBuild")], check=True, env=env, timeout=60)
    settings = (
        tmp_path
        / ".jupyter/lab/user-settings/@jupyterlab/docmanager-extension/plugin.jupyterlab-settings"
    )
    assert json.loads(settings.read_text())["defaultViewers"]["markdown"] == "Markdown Preview"
    assert (ROOT / "binder" / "runtime.txt").read_text().strip().startswith("python-3.11")


@pytest.mark.browser
def test_download_button_saves_an_ipynb_file(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    """Clicking the download button saves a notebook file; it does not open JSON in the browser."""
    if not NOTEBOOK_PAGES:
        pytest.skip("no chapter pages in the site yet")
    page = NOTEBOOK_PAGES[0]
    r = audit(browser, server, page)
    name = Path(page).with_suffix(".ipynb").name
    assert r["download"], f"{page} has no download button"
    assert r["download"]["href"].endswith(".ipynb"), r["download"]
    assert r["download"]["download"] == name, (
        f"the download link has download={r['download']['download']!r}"
    )
    browser.goto(server.base + page)
    browser.send(
        "Browser.setDownloadBehavior",
        behavior="allow",
        downloadPath=str(browser.downloads),
        eventsEnabled=True,
    )
    start = len(browser.events)
    browser.js("document.querySelector('a.btn-download-source-button').click(); true")
    begin = browser.wait_event("Browser.downloadWillBegin", 15, since=start)
    assert begin["params"]["suggestedFilename"] == name
    state, deadline = "", time.monotonic() + 20
    while state != "completed" and time.monotonic() < deadline:
        browser.send("Runtime.evaluate", expression="0")  # collects the events that arrived
        states = [
            e["params"]["state"]
            for e in browser.events[start:]
            if e["method"] == "Browser.downloadProgress"
        ]
        state = "completed" if "completed" in states else (states[-1] if states else "")
        time.sleep(0.05)
    assert state == "completed", f"the download did not complete: {state!r}"
    files = list(browser.downloads.iterdir())
    assert files, "nothing was downloaded"
    nb = json.loads(files[0].read_text())
    assert nb["nbformat"] == 4 and nb["cells"], "the downloaded file is not a notebook"


CONTRAST_JS = r"""
(() => {
  const parse = (c) => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null; const v = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return {r: v[0], g: v[1], b: v[2], a: v.length > 3 ? v[3] : 1}; };
  const lum = (c) => { const f = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const bgOf = (el) => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0.5) return c; } return parse(getComputedStyle(document.body).backgroundColor) || {r: 255, g: 255, b: 255, a: 1}; };
  const bad = [];
  const seen = new Set();
  for (const el of document.querySelectorAll("article *, .bd-sidebar-primary a, .bd-header *")) {
    if (el.closest("mjx-container, svg, .highlight, .igbook-graph-svg")) continue;
    const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim().length > 1);
    if (!own || el.getClientRects().length === 0) continue;
    const st = getComputedStyle(el);
    if (st.visibility === "hidden" || parseFloat(st.opacity) < 0.5) continue;
    const fg = parse(st.color), bg = bgOf(el);
    if (!fg) continue;
    const l1 = lum(fg), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 3) {
      const key = el.tagName + "." + el.className + ":" + ratio.toFixed(1);
      if (seen.has(key)) continue; seen.add(key);
      bad.push(`${ratio.toFixed(2)}: <${el.tagName.toLowerCase()} class="${el.className}"> ${el.textContent.trim().slice(0, 60)}`);
    }
  }
  return bad;
})()
"""

SET_THEME_JS = """
((mode) => {
  localStorage.setItem("mode", mode); localStorage.setItem("theme", mode);
  document.documentElement.dataset.mode = mode; document.documentElement.dataset.theme = mode;
  return document.documentElement.dataset.theme;
})(%r)
"""

# where to look on a page: the top, then the first element matching each selector
SHOT_SPOTS = {
    "top": None,
    "figure": ".cell_output img, .igbook-graph-svg, div.animation",
    "theorem": "div.proof, div.theorem, div.definition, div.admonition",
    "widget": ".igbook-widget-fallback",
    "exercise": "div.exercise, .igbook-exercises",
    "table": "table.igbook-table",
}


def _shot_pages() -> list[str]:
    """Intro, the two generated appendices, the first chapter, the first with a widget, the last."""
    chapters = [f"{f}.html" for f in _toc_files() if f"{f}.html" in NOTEBOOK_PAGES]
    widget = [
        p for p in chapters if "igbook-widget-fallback" in (SITE / p).read_text(errors="replace")
    ]
    wanted = [
        "book/intro.html",
        "book/performance.html",
        "book/instructors.html",
        *chapters[:1],
        *widget[:1],
        *chapters[-1:],
    ]
    return [p for p in dict.fromkeys(wanted) if p in PAGES]


@pytest.mark.browser
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_and_contrast(browser: Browser, server: Server, theme: str) -> None:
    """Screenshots of the main kinds of pages in both themes, and readable text (contrast >= 3)."""
    pages = _shot_pages()
    if not pages:
        pytest.skip("no pages to photograph")
    problems: dict[str, list[str]] = {}
    taken = []
    for page in pages:
        browser.goto(server.base + page)
        assert browser.js(SET_THEME_JS % theme) == theme
        browser.js(
            "(async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; await new Promise(r => setTimeout(r, 250)); return 1; })()"
        )
        low = browser.js(CONTRAST_JS)
        if low:
            problems[page] = low
        stem = page.replace("/", "_").removesuffix(".html")
        for spot, selector in SHOT_SPOTS.items():
            if selector is None:
                browser.js("window.scrollTo(0, 0); 1")
            else:
                found = browser.js(
                    f"(() => {{ const el = document.querySelector({json.dumps(selector)}); if (!el) return false;"
                    " el.scrollIntoView({block: 'start'}); window.scrollBy(0, -90); return true; })()"
                )
                if not found:
                    continue
            time.sleep(0.15)
            taken.append(browser.screenshot(SHOTS / theme / f"{stem}-{spot}.png"))
    assert taken and all(p.stat().st_size > 5000 for p in taken), "screenshots are missing or blank"
    assert not problems, f"text with contrast below 3:1 in the {theme} theme:\n" + "\n".join(
        _report(p, {"low contrast": v}) for p, v in problems.items()
    )


# --------------------------------------------------------------------------------------------
# the site extension's generated content (no browser needed; run by `make test-package`)
# --------------------------------------------------------------------------------------------


def _site_ext():  # type: ignore[no-untyped-def]
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import igbook_site

    return igbook_site


def _texts(nodelist: list[Any]) -> str:
    return "\n".join(n.astext() for n in nodelist)


def test_benchmark_json_of_any_shape_renders() -> None:
    """Results files written by different scripts (records, nested dicts, scalars) all become tables."""
    from docutils import nodes

    ext = _site_ext()
    data = {
        "title": "K-FAC against Adam",
        "machine": {"cpu": "x86_64", "threads": 2, "torch": "2.13.0"},
        "settings": {"steps": 200, "lr": {"adam": 1e-3, "kfac": 0.1}},
        "results": [
            {"method": "adam", "seconds": 1.23456, "loss": 0.000012},
            {"method": "kfac", "seconds": 2.5, "loss": 1e-7, "extra": [1, 2]},
        ],
        "per_model": {
            "mlp": {"time": 1.0, "passes": {"fisher": 3, "ggn": 2}},
            "cnn": {"time": 2.0},
        },
        "speedup": 2.02,
        "series": {"losses": [0.3, 0.25, 0.2, 0.15, 0.1], "widths": [64, 256, 128, 64, 16]},
        "nested": {"deeper": {"value": float("nan")}},
        "notes": "medians of 5 repeats",
    }
    out = ext.render_result(data)
    text = _texts(out)
    tables = [t for n in out for t in n.findall(nodes.table)]
    assert len(tables) >= 3, text
    for needle in (
        "x86_64",
        "steps=200",
        "lr.adam=0.001",
        "adam",
        "kfac",
        "1.235",
        "1.200e-05",
        "1, 2",
        "mlp",
        "0.3 → 0.1 (5 values)",
        "64, 256, 128, 64, 16",
        "passes.fisher",
        "2.02",
        "nan",
        "medians of 5 repeats",
    ):
        assert needle in text, f"{needle!r} missing from the rendered page:\n{text}"
    # a bare list or a scalar does not crash either
    assert "3" in _texts(ext.render_result([{"a": 3}]))
    assert _texts(ext.render_result(42)) == "42"
    assert (
        ext.fmt(None) == "—"
        and ext.fmt(True) == "yes"
        and ext.fmt(123456) == "123,456"
        and ext.fmt(0.5) == "0.5"
    )


def test_exercises_and_prerequisites_are_read_from_markdown() -> None:
    ext = _site_ext()
    md = """# T
```{exercise} Fisher of a Bernoulli
:label: ex-a
Compute it. Check with `check_bernoulli_fisher(lambda p: ...)`.
```
```{solution} ex-a
:class: dropdown
Answer.
```
:::{exercise} Prove the identity
:label: ex-b
Show that $F = \\nabla^2 A$; check it with `check_gaussian_hessian`, named without a call.
:::
````{exercise}
Move the sliders of the explorer.
````
"""
    exs = ext._parse_exercises(md)
    assert [e.label for e in exs] == ["ex-a", "ex-b", None]
    assert (
        exs[0].self_check == ["check_bernoulli_fisher"] and exs[0].kind == "homework, self-checked"
    )
    assert exs[1].self_check == ["check_gaussian_hessian"] and exs[1].title == "Prove the identity"
    assert exs[1].kind == "homework, self-checked"
    assert (
        ext._parse_exercises("```{exercise} P\n:label: ex-p\nProve that it holds.\n```\n")[0].kind
        == "written homework (proof)"
    )
    assert exs[2].kind.startswith("lab session") and exs[2].title == "Exercise"


def test_dependency_graph_drops_implied_edges() -> None:
    ext = _site_ext()
    C = ext.Chapter
    chs = [
        C("a", "A", 1, 1, 1, [], set()),
        C("b", "B", 2, 1, 1, [], set(), ["a"]),
        C("c", "C", 3, 1, 1, [], set(), ["a", "b"]),
    ]
    assert sorted(ext._reduced_edges(chs)) == [("a", "b"), ("b", "c")]
    assert ext._layers(chs) == {"a": 0, "b": 1, "c": 2}
    svg = ext.dependency_svg(chs)
    assert svg.startswith("<svg") and svg.count("<path") >= 5


def test_chapters_follow_the_toc() -> None:
    """Every chapter notebook in _toc.yml is found, in order, with its exercises; prerequisites are earlier chapters."""
    ext = _site_ext()
    chs = ext.chapters()
    toc = [Path(f).name for f in _toc_files() if (ROOT / f).with_suffix(".ipynb").exists()]
    assert [c.name for c in chs] == toc
    for i, c in enumerate(chs):
        assert c.title and c.words > 0 and c.code_cells > 0, c.name
        assert set(c.prerequisites) <= {d.name for d in chs[:i]}
        assert all(e.title for e in c.exercises)


def test_mathjax_is_vendored() -> None:
    ext = _site_ext()
    es5 = ext.mathjax_es5_dir()
    assert es5 is not None, "MathJax 3 is not installed: pip install -r requirements.txt"
    assert 'VERSION="3.' in (es5 / "tex-chtml.js").read_text(errors="replace"), "not MathJax 3"
    assert (es5 / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").is_file()

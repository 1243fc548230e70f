"""Every page readable from a phone (390 px) to a desktop (1280 px), in headless Chromium.

At each width: the page never scrolls sideways as a whole, and no element of the article runs
past the article's column unless it sits in a box that scrolls (display math, code outputs,
wide figures on a phone); live figures' legends and labels are at least 9 px.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from test_site import PAGES, browser, server, site  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

OVERFLOW_JS = r"""(() => {
  const bad = [];
  const article = document.querySelector(".bd-article") || document.body;
  const A = article.getBoundingClientRect();
  const ov = (el) => getComputedStyle(el).overflowX;
  const describe = (el, r, edge) => el.tagName.toLowerCase() + "." + (typeof el.className === "string" ? el.className : "") +
    " right=" + Math.round(r.right) + " > " + Math.round(edge) + ": " + (el.textContent || "").trim().slice(0, 60);
  for (const el of article.querySelectorAll("*")) {
    if (el.closest("mjx-container") && el.tagName.toLowerCase() !== "mjx-container") continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    // walk up: the first ancestor that scrolls makes it reachable; one that hides overflow clips it
    let p = el.parentElement, verdict = r.right > A.right + 2 ? "past the column" : null;
    while (p && p !== article) {
      const o = ov(p), pr = p.getBoundingClientRect();
      if (o === "auto" || o === "scroll") { verdict = null; break; }
      if ((o === "hidden" || o === "clip") && r.right > pr.right + 2 && r.left < pr.right) { verdict = "clipped by " + p.tagName.toLowerCase() + "." + p.className; break; }
      p = p.parentElement;
    }
    if (verdict) bad.push(verdict + ": " + describe(el, r, A.right));
  }
  // equation numbers never overlap their formula
  for (const m of article.querySelectorAll("div.math")) {
    const n = m.querySelector(".eqno"), c = m.querySelector("mjx-container");
    if (!n || !c) continue;
    const a = n.getBoundingClientRect(), b = c.getBoundingClientRect();
    const inner = c.firstElementChild ? c.firstElementChild.getBoundingClientRect() : b;
    const right = Math.min(b.right, inner.right);
    if (a.left < right - 1 && a.top < b.bottom && a.bottom > b.top) bad.push("equation number over its formula: " + m.textContent.trim().slice(0, 60));
  }
  const small = [];
  for (const d of (window.Bokeh ? Bokeh.documents : [])) for (const m of d.all_models) {
    for (const prop of ["label_text_font_size", "major_label_text_font_size", "axis_label_text_font_size", "text_font_size"]) {
      const v = m[prop];
      if (typeof v === "string" && v.endsWith("px") && parseFloat(v) < 9) small.push(m.type + "." + prop + " = " + v);
    }
  }
  return {pageScroll: document.documentElement.scrollWidth > innerWidth + 1, bad: bad.slice(0, 10), n: bad.length, small: small};
})()"""


@pytest.mark.parametrize("page", PAGES)
def test_nothing_overflows(page: str, server: Any, browser: Any) -> None:  # noqa: F811
    """One load per page: checked at 390 px, then resized to 1280 px (the page reflows) and checked again."""
    failures = []
    try:
        for i, width in enumerate((390, 1280)):
            browser.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=900,
                deviceScaleFactor=1,
                mobile=width < 600,
            )
            if i == 0:
                browser.goto(server.base + page)
                browser.js(
                    "(async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; })()"
                )
            time.sleep(0.4)
            out = browser.js(OVERFLOW_JS)
            if out["pageScroll"]:
                failures.append(f"{page} at {width} px scrolls sideways as a whole")
            if out["n"]:
                failures.append(
                    f"{page} at {width} px: {out['n']} element(s) overflow the column without scrolling: "
                    + json.dumps(out["bad"], ensure_ascii=False)
                )
            if out["small"]:
                failures.append(f"{page}: live-figure text below 9 px: {out['small']}")
    finally:
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
    assert not failures, "\n".join(failures)

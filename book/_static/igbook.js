/* igbook site script (book/_static/igbook.js), added to every page by tools/igbook_site.py.
 *
 * Notebook downloads: a link to an .ipynb is served as JSON, which browsers display as text
 * (sphinx-book-theme#918). Setting the `download` attribute makes the browser save the file,
 * named after the notebook, instead of opening it in a new tab. */
(function () {
  "use strict";
  function fixDownloads(root) {
    root.querySelectorAll('a[href$=".ipynb"], a[href*=".ipynb?"]').forEach(function (a) {
      var url;
      try { url = new URL(a.getAttribute("href"), document.baseURI); } catch (e) { return; }
      if (url.origin !== window.location.origin) { return; }  // Binder and other launch links
      var name = url.pathname.split("/").pop();
      a.setAttribute("download", decodeURIComponent(name));
      a.removeAttribute("target");
      a.setAttribute("type", "application/x-ipynb+json");
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { fixDownloads(document); });
  } else {
    fixDownloads(document);
  }
})();

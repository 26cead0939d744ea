// Render the site's Mermaid diagrams with the vendored mermaid.min.js (no CDN).
//
// The diagram fences are emitted as <div class="mermaid"> (pymdownx.superfences with
// fence_div_format), which Material's own integration ignores, so the SVG is rendered into
// the page itself (not a closed shadow root) and can be checked in a headless browser.
// When rendering ends, <body data-mermaid="rendered:N"> (or "error:...") records it.
(function () {
  "use strict";
  function render() {
    var blocks = document.querySelectorAll("div.mermaid");
    if (!blocks.length || typeof mermaid === "undefined") {
      document.body.dataset.mermaid = typeof mermaid === "undefined" ? "error:mermaid.js not loaded" : "none";
      return;
    }
    mermaid.initialize({ startOnLoad: false, theme: "neutral", securityLevel: "strict" });
    mermaid
      .run({ nodes: blocks })
      .then(function () {
        document.body.dataset.mermaid = "rendered:" + document.querySelectorAll("div.mermaid svg").length;
      })
      .catch(function (error) {
        document.body.dataset.mermaid = "error:" + String(error && error.message ? error.message : error);
      });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", render);
  } else {
    render();
  }
})();

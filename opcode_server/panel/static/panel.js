// opcode panel: the little glue htmx does not do by itself. No inline scripts anywhere (the CSP forbids them).
(function () {
  "use strict";

  function setLive(state) {
    document.body.dataset.live = state;
  }

  // Every part marked data-resync re-reads itself when the stream (re)opens: nothing that happened
  // between the page render and the connection, or while disconnected, is missed.
  document.body.addEventListener("htmx:sseOpen", function () {
    setLive("open");
    document.querySelectorAll("[data-resync]").forEach(function (el) {
      htmx.trigger(el, "panel:resync");
    });
  });
  document.body.addEventListener("htmx:sseError", function () { setLive("closed"); });

  // A pushed row already on the page (pushed twice across a resync) is not added again.
  document.body.addEventListener("htmx:sseBeforeMessage", function (evt) {
    var match = /id="(ev-[^"]+)"/.exec(evt.detail.data || "");
    if (match && document.getElementById(match[1])) {
      evt.preventDefault();
    }
  });

  // Feeds keep a bounded number of rows and lose their "no events yet" line once one arrives.
  document.body.addEventListener("htmx:sseMessage", function (evt) {
    var list = evt.target;
    if (!list || !list.classList || !list.classList.contains("feed")) {
      return;
    }
    var empty = list.querySelector(".empty");
    if (empty) {
      empty.remove();
    }
    var cap = parseInt(list.dataset.cap || "0", 10);
    while (cap && list.children.length > cap) {
      list.removeChild(list.lastElementChild);
    }
  });

  // Forms that ask first (cancel), selects that submit their form (version picker).
  document.addEventListener("submit", function (evt) {
    var question = evt.target.dataset && evt.target.dataset.confirm;
    if (question && !window.confirm(question)) {
      evt.preventDefault();
    }
  }, true);
  document.addEventListener("change", function (evt) {
    if (evt.target.matches && evt.target.matches("select[data-autosubmit]")) {
      evt.target.form.submit();
    }
  });
})();

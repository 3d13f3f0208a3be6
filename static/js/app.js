// Small behaviours for server-rendered pages. No inline scripts: the CSP forbids them.
(function () {
  "use strict";

  function currentTheme() {
    var explicit = document.documentElement.getAttribute("data-theme");
    if (explicit) return explicit;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function bindThemeToggle(root) {
    root.querySelectorAll("[data-theme-toggle]").forEach(function (button) {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var next = currentTheme() === "dark" ? "light" : "dark";
        document.documentElement.setAttribute("data-theme", next);
        try { window.localStorage.setItem("gatehouse-theme", next); } catch (e) { /* storage blocked */ }
        document.dispatchEvent(new CustomEvent("gatehouse:theme", { detail: next }));
      });
    });
  }

  // <button data-copy="text"> or data-copy-target="#id" copies to the clipboard.
  function bindCopyButtons(root) {
    root.querySelectorAll("[data-copy], [data-copy-target]").forEach(function (button) {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var text = button.dataset.copy;
        if (button.dataset.copyTarget) {
          var target = document.querySelector(button.dataset.copyTarget);
          text = target ? (target.value || target.textContent) : "";
        }
        var label = button.textContent;
        navigator.clipboard.writeText(text.trim()).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = label; }, 1500);
        });
      });
    });
  }

  // <form data-confirm="message">: asks before submitting (destructive actions).
  function bindConfirmForms(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  // <form data-busy="Redirecting to Stripe…">: a slow submit (a redirect to Stripe) shows progress and
  // cannot be sent twice. Runs after data-confirm, so a cancelled confirmation leaves the button alone.
  function bindBusyForms(root) {
    root.querySelectorAll("form[data-busy]").forEach(function (form) {
      if (form.dataset.busyBound) return;
      form.dataset.busyBound = "1";
      form.addEventListener("submit", function (event) {
        if (event.defaultPrevented) return;
        var button = form.querySelector("button[type=submit], button:not([type])");
        if (!button) return;
        if (button.getAttribute("aria-busy") === "true") { event.preventDefault(); return; }
        button.dataset.label = button.textContent;
        button.setAttribute("aria-busy", "true");
        button.textContent = form.dataset.busy;
      });
    });
  }

  // Coming back from Stripe with the Back button restores the page from cache: un-busy its buttons.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form[data-busy] [aria-busy=true]").forEach(function (button) {
      button.removeAttribute("aria-busy");
      if (button.dataset.label) button.textContent = button.dataset.label;
    });
  });

  // <button data-close-dialog> closes its <dialog>; <button data-open-dialog="id"> opens that one (a <dialog
  // data-open> — a form sent back with errors — opens by itself); htmx content arriving in a dialog's body opens it.
  function bindDialogs(root) {
    root.querySelectorAll("[data-open-dialog]").forEach(function (button) {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var dialog = document.getElementById(button.dataset.openDialog);
        if (dialog && !dialog.open) dialog.showModal();
      });
    });
    root.querySelectorAll("dialog[data-open]").forEach(function (dialog) {
      if (!dialog.open) dialog.showModal();
      dialog.removeAttribute("data-open");
    });
    root.querySelectorAll("[data-close-dialog]").forEach(function (button) {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var dialog = button.closest("dialog");
        if (dialog) dialog.close();
      });
    });
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var dialog = event.target && event.target.closest ? event.target.closest("dialog") : null;
    if (dialog && !dialog.open) dialog.showModal();
  });

  // A box that scrolls sideways (a wide table on a phone, a long code line) takes keyboard focus, so the arrow keys
  // can scroll it, and is a named region; a box that fits is left out of the tab order.
  var SCROLL_BOXES = ".table-scroll, .code-block";
  function labelOf(box) {
    if (box.dataset.scrollLabel) return box.dataset.scrollLabel;
    var caption = box.querySelector("caption");
    if (caption && caption.textContent.trim()) return caption.textContent.trim();
    var section = box.closest("section, article, .panel, main");
    var heading = section ? section.querySelector("h1, h2, h3, h4") : null;
    return heading ? heading.textContent.trim() : "Scrollable content";
  }
  function markScrollBoxes(root) {
    var boxes = Array.prototype.slice.call(root.querySelectorAll ? root.querySelectorAll(SCROLL_BOXES) : []);
    if (root.matches && root.matches(SCROLL_BOXES)) boxes.push(root);
    boxes.forEach(function (box) {
      var scrolls = box.scrollWidth > box.clientWidth + 1;
      if (scrolls && !box.hasAttribute("tabindex")) {
        box.setAttribute("tabindex", "0");
        box.setAttribute("role", "region");
        box.setAttribute("aria-label", labelOf(box) + " (scrolls sideways)");
        box.dataset.scrollMarked = "1";
      } else if (!scrolls && box.dataset.scrollMarked) {
        ["tabindex", "role", "aria-label"].forEach(function (name) { box.removeAttribute(name); });
        delete box.dataset.scrollMarked;
      }
    });
  }
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { markScrollBoxes(document); }, 100);
  });

  // <table class="stack">: on a phone each row becomes a card (CSS): its first cell the title, then "Header  value"
  // lines, so every amount stays in view. The labels come from the table's own column headers.
  function labelStackedTables(root) {
    var tables = Array.prototype.slice.call(root.querySelectorAll ? root.querySelectorAll("table.stack") : []);
    if (root.matches && root.matches("table.stack")) tables.push(root);
    tables.forEach(function (table) {
      var headers = [];
      var head = table.tHead && table.tHead.rows[0];
      if (!head) return;
      Array.prototype.forEach.call(head.cells, function (cell) {
        for (var i = 0; i < cell.colSpan; i++) headers.push(cell.textContent.trim());
      });
      Array.prototype.forEach.call(table.tBodies, function (body) {
        Array.prototype.forEach.call(body.rows, function (row) {
          var column = 0;
          Array.prototype.forEach.call(row.cells, function (cell) {
            if (column > 0 && cell.colSpan === 1 && headers[column] && !cell.hasAttribute("data-label")) {
              cell.setAttribute("data-label", headers[column]);
            }
            column += cell.colSpan;
          });
        });
      });
    });
  }

  function bindAll(root) {
    labelStackedTables(root);
    markScrollBoxes(root);
    bindThemeToggle(root);
    bindCopyButtons(root);
    bindConfirmForms(root);
    bindBusyForms(root);
    bindDialogs(root);
    document.dispatchEvent(new CustomEvent("gatehouse:bind", { detail: root }));
  }

  document.addEventListener("DOMContentLoaded", function () { bindAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { bindAll(event.target); });
  window.Gatehouse = { bindAll: bindAll, currentTheme: currentTheme, markScrollBoxes: markScrollBoxes };
})();

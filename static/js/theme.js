// Applies the saved colour scheme before first paint (loaded synchronously in <head>).
(function () {
  var saved = null;
  try { saved = window.localStorage.getItem("gatehouse-theme"); } catch (e) { /* storage blocked */ }
  if (saved === "light" || saved === "dark") {
    document.documentElement.setAttribute("data-theme", saved);
  }
})();

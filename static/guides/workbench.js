/* Progressive enhancement only: every page works without this file. */
(function () {
  "use strict";
  // A form marked data-once sends once: the second tap of a double tap is ignored (the server
  // records an outcome once anyway; this only spares a second request).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-once")) return;
    if (form.dataset.sent) { event.preventDefault(); return; }
    form.dataset.sent = "1";
    form.classList.add("is-sending");
  });
  // Copy the script for WeCom: shown only where the clipboard is available.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    button.hidden = false;
    var hint = button.parentElement.querySelector(".no-js-hint");
    if (hint) hint.hidden = true;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.value).then(function () {
        button.textContent = button.getAttribute("data-copied");
      });
    });
  });
  // Pull to refresh on Today: pulling down from the top reloads, like the refresh button.
  var refresh = document.querySelector("[data-refresh]");
  if (refresh && "ontouchstart" in window) {
    var startY = null;
    window.addEventListener("touchstart", function (e) { startY = window.scrollY === 0 ? e.touches[0].clientY : null; }, { passive: true });
    window.addEventListener("touchend", function (e) {
      if (startY !== null && e.changedTouches[0].clientY - startY > 120) window.location.reload();
      startY = null;
    }, { passive: true });
  }
})();

// The chosen theme (light, dark, or the system's), applied before the page paints.
"use strict";
(function () {
  const chosen = localStorage.getItem("llmnest-theme");
  if (chosen) document.documentElement.dataset.theme = chosen;
})();

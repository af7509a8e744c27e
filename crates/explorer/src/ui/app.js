// "Copy link": copies the address of the current view (every filter is in it). The page
// works without this script; the link is also shown in a read-only field.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field) {
      continue;
    }
    field.value = new URL(field.value, window.location.href).href;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(field.value);
      } catch {
        // No clipboard permission (e.g. plain http on another host): select the text.
        field.select();
        document.execCommand("copy");
      }
      button.textContent = "Copied";
      setTimeout(() => {
        button.textContent = "Copy link";
      }, 1500);
    });
  }
});

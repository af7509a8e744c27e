// What the pages do with a script; each works without it, showing everything:
// - "Copy link" copies the address of the view (every filter is in it);
// - times in UTC or in the browser's time zone, as the reader chose (remembered);
// - relative time presets counted from the moment they are clicked;
// - dragging across the timeline zooms to that range;
// - long cells are cut at two lines, with a button to show them whole.
"use strict";

document.documentElement.classList.add("js");

const TZ_KEY = "api-sessions.time-zone";

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/// The parts of a time in UTC or in the local time zone.
function parts(ms, local) {
  const d = new Date(ms);
  return local
    ? { y: d.getFullYear(), mo: d.getMonth() + 1, d: d.getDate(), h: d.getHours(), mi: d.getMinutes(), s: d.getSeconds(), ms: d.getMilliseconds() }
    : { y: d.getUTCFullYear(), mo: d.getUTCMonth() + 1, d: d.getUTCDate(), h: d.getUTCHours(), mi: d.getUTCMinutes(), s: d.getUTCSeconds(), ms: d.getUTCMilliseconds() };
}

/// `YYYY-MM-DD HH:MM:SS.mmm`, as the server writes times.
function fullTime(ms, local) {
  const p = parts(ms, local);
  return `${p.y}-${pad(p.mo)}-${pad(p.d)} ${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}.${pad(p.ms, 3)}`;
}

/// A tick label: `hms`, `hm`, `md`, or the date and a time (`md hm`).
function tickLabel(ms, format, local) {
  const p = parts(ms, local);
  const words = { md: `${pad(p.mo)}-${pad(p.d)}`, hm: `${pad(p.h)}:${pad(p.mi)}`, hms: `${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}` };
  return format.split(" ").map((word) => words[word] || "").join(" ");
}

/// `YYYY-MM-DDTHH:MM:SS`, what a datetime-local input holds.
function pickerValue(ms, local) {
  const p = parts(ms, local);
  return `${p.y}-${pad(p.mo)}-${pad(p.d)}T${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}`;
}

/// Reads a datetime-local value as UTC or as local time; NaN when it is not one.
function readPicker(value, local) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(value);
  if (!m) {
    return NaN;
  }
  const n = m.slice(1).map((x) => Number(x || 0));
  return local
    ? new Date(n[0], n[1] - 1, n[2], n[3], n[4], n[5], n[6]).getTime()
    : Date.UTC(n[0], n[1] - 1, n[2], n[3], n[4], n[5], n[6]);
}

function offsetName() {
  const minutes = -new Date().getTimezoneOffset();
  const sign = minutes < 0 ? "−" : "+";
  const a = Math.abs(minutes);
  return `UTC${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

function localChosen() {
  try {
    return localStorage.getItem(TZ_KEY) === "local";
  } catch {
    return false;
  }
}

/// Shows every time of the page in UTC or in local time.
function showTimes(local) {
  document.documentElement.dataset.timeZone = local ? "local" : "utc";
  for (const el of document.querySelectorAll("time[data-ts]")) {
    el.textContent = fullTime(Number(el.dataset.ts), local);
    el.title = local ? `${fullTime(Number(el.dataset.ts), false)} UTC` : "UTC";
  }
  for (const el of document.querySelectorAll("text[data-ts][data-format]")) {
    el.textContent = tickLabel(Number(el.dataset.ts), el.dataset.format, local);
  }
  for (const el of document.querySelectorAll(".tz-name")) {
    el.textContent = local ? `local time, ${offsetName()}` : "UTC";
  }
  for (const input of document.querySelectorAll("input[type=datetime-local]")) {
    const ms = Number(input.dataset.utcMs);
    if (input.dataset.utcMs && input.value === input.dataset.shown) {
      input.value = pickerValue(ms, local);
      input.dataset.shown = input.value;
    }
  }
  const button = document.getElementById("tz-toggle");
  if (button) {
    button.hidden = false;
    button.textContent = local ? `Times: local (${offsetName()})` : "Times: UTC";
    button.setAttribute("aria-pressed", local ? "true" : "false");
  }
}

function setUpTimes() {
  // The pickers arrive in UTC: remember what they stand for, so that switching converts them.
  for (const input of document.querySelectorAll("input[type=datetime-local]")) {
    const ms = readPicker(input.value, false);
    if (!Number.isNaN(ms)) {
      input.dataset.utcMs = String(ms);
      input.dataset.shown = input.value;
    }
  }
  // A form sends its times in UTC, whatever they are shown in.
  for (const form of document.querySelectorAll("form.filters")) {
    form.addEventListener("submit", () => {
      const local = localChosen();
      for (const input of form.querySelectorAll("input[type=datetime-local]")) {
        const ms = readPicker(input.value, local);
        if (!Number.isNaN(ms)) {
          input.value = pickerValue(ms, false);
        }
      }
    });
  }
  const button = document.getElementById("tz-toggle");
  if (button) {
    button.addEventListener("click", () => {
      const local = !localChosen();
      try {
        localStorage.setItem(TZ_KEY, local ? "local" : "utc");
      } catch {
        // Storage refused (private mode): the choice holds for this page only.
      }
      showTimes(local);
    });
  }
  showTimes(localChosen());
}

function setUpCopyLink() {
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
}

/// "Last 15 min" means the 15 minutes before the click, not before the page was made.
function setUpPresets() {
  for (const link of document.querySelectorAll("a.preset[data-length]")) {
    link.addEventListener("click", (event) => {
      const url = new URL(link.href);
      const from = Math.floor((Date.now() - Number(link.dataset.length)) / 1000) * 1000;
      url.searchParams.set("from", new Date(from).toISOString());
      url.searchParams.delete("to");
      url.searchParams.delete("cursor");
      event.preventDefault();
      window.location.assign(url.href);
    });
  }
}

/// Dragging across the timeline selects a range and shows the requests in it.
function setUpTimeline() {
  const figure = document.getElementById("timeline");
  const svg = figure && figure.querySelector("svg");
  if (!svg) {
    return;
  }
  const start = Number(figure.dataset.start);
  const span = Number(figure.dataset.end) - start + 1;
  const width = Number(figure.dataset.width);
  const selection = svg.querySelector("rect.selection");
  const at = (event) => {
    const box = svg.getBoundingClientRect();
    return Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
  };
  let from = null;
  let dragged = false;
  svg.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) {
      return;
    }
    from = at(event);
    dragged = false;
    svg.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  svg.addEventListener("pointermove", (event) => {
    if (from === null) {
      return;
    }
    const to = at(event);
    const box = svg.getBoundingClientRect();
    if (Math.abs(to - from) * box.width > 4) {
      dragged = true;
    }
    if (dragged) {
      selection.setAttribute("x", String(Math.min(from, to) * width));
      selection.setAttribute("width", String(Math.abs(to - from) * width));
      selection.setAttribute("height", "120");
    }
  });
  svg.addEventListener("pointerup", (event) => {
    if (from === null) {
      return;
    }
    const to = at(event);
    const begin = from;
    from = null;
    if (!dragged) {
      // A click: the slice's own link answers it. Pointer capture moved the click to the
      // chart, so follow the link under the pointer.
      const hit = document.elementsFromPoint(event.clientX, event.clientY).find((el) => el.closest("a.zoom"));
      if (hit) {
        window.location.assign(hit.closest("a.zoom").href.baseVal || hit.closest("a.zoom").getAttribute("href"));
      }
      return;
    }
    const low = Math.floor((start + Math.min(begin, to) * span) / 1000) * 1000;
    const high = Math.ceil((start + Math.max(begin, to) * span) / 1000) * 1000;
    const url = new URL(figure.dataset.unranged, window.location.href);
    url.searchParams.set("from", new Date(low).toISOString());
    url.searchParams.set("to", new Date(high).toISOString());
    window.location.assign(url.href);
  });
  // The click that ends a press is handled above.
  svg.addEventListener(
    "click",
    (event) => {
      // A click from the keyboard (detail 0) follows the focused slice's link as usual.
      if (event.detail > 0) {
        event.preventDefault();
      }
    },
    true,
  );
}

/// Cuts long cells at two lines (the stylesheet does, under `.js`) and offers the rest.
function clampCells(root) {
  for (const cell of root.querySelectorAll(".clamp")) {
    if (cell.dataset.measured || cell.offsetParent === null) {
      continue;
    }
    cell.dataset.measured = "1";
    if (cell.scrollHeight <= cell.clientHeight + 2) {
      continue;
    }
    const button = document.createElement("button");
    button.type = "button";
    button.className = "expand";
    button.textContent = "Show all";
    button.addEventListener("click", (event) => {
      event.preventDefault();
      event.stopPropagation();
      const open = cell.classList.toggle("open");
      button.textContent = open ? "Show less" : "Show all";
    });
    cell.after(button);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpCopyLink();
  setUpTimes();
  setUpPresets();
  setUpTimeline();
  clampCells(document);
  for (const details of document.querySelectorAll("details")) {
    details.addEventListener("toggle", () => clampCells(details));
  }
});

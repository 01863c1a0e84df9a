// Small shared helpers: DOM building (user text only ever becomes text nodes), toasts, debounce.

export const APP_NAME = "Chatterwerks";
export const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;

export const $ = (id) => document.getElementById(id);

/** Builds an element. Children that are strings become text nodes (never HTML). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** A small stroke icon from path data (constants in this file, not user text). */
export function icon(...paths) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  for (const d of paths) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

export const ICONS = {
  home: ["M4 11l8-6 8 6", "M6 10v9h12v-9"],
  x: ["M6 6l12 12M18 6L6 18"],
};

export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** A stable colour class for a name, so a person looks the same everywhere. */
function colorClass(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return "c" + (hash % 8);
}

export function avatar(user, extraClass = "") {
  const cls = `avatar ${user.is_bot ? "is-bot" : colorClass(user.username)} ${extraClass}`;
  return h("span", { class: cls.trim(), "aria-hidden": "true" }, initial(user.username));
}

function initial(name) {
  return (name || "?").slice(0, 1).toUpperCase();
}

export function setFieldError(input, errorEl, message) {
  errorEl.textContent = message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

let toastTimer = 0;
export function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, 5000);
}

export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export function closeDialog(dialog) {
  if (dialog.open) dialog.close();
}

// A message's files: images inline as thumbnails (opening full size in a
// viewer), other files as a card that downloads. Shared by the channel's list
// and the thread panel (msgview.js calls attachmentsOf()).
//
// Only raster images with a server-made thumbnail are shown inline; anything
// else (SVG, HTML, a PDF, an image the server would not thumbnail) is a card
// whose link downloads it. Names are text nodes, never HTML.

import { h, icon } from "./util.js";

// The box a thumbnail is fitted into (CSS pixels); the thumbnail itself is at
// most 720 px, so it stays sharp on a 2x screen.
const THUMB_MAX_W = 360;
const THUMB_MAX_H = 270;

const FILE_ICON = ["M6 3h8l4 4v14H6z", "M14 3v4h4"];
const DOWNLOAD_ICON = ["M12 4v11", "M7 10l5 5 5-5", "M5 20h14"];
const CLOSE_ICON = ["M6 6l12 12M18 6L6 18"];

const TYPE_NAMES = {
  "application/pdf": "PDF",
  "application/zip": "ZIP archive",
  "application/gzip": "Gzip archive",
  "application/json": "JSON",
  "text/plain": "Text",
  "text/csv": "CSV",
  "text/html": "HTML",
  "image/svg+xml": "SVG image",
  "application/octet-stream": "",
};

/** A size for people: 0 B, 999 B, 1.5 KB, 12 MB (1 KB = 1024 bytes). */
export function humanSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 1024) return `${Math.max(0, bytes || 0)} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = value < 10 ? value.toFixed(1).replace(/\.0$/, "") : String(Math.round(value));
  return `${shown} ${units[unit]}`;
}

/** A short type for people: "PDF", "PNG image", else the name's extension. */
export function typeLabel(file) {
  const type = (file.content_type || "").split(";")[0].trim().toLowerCase();
  if (type in TYPE_NAMES && TYPE_NAMES[type]) return TYPE_NAMES[type];
  const [major, minor] = type.split("/");
  if (major === "image" && minor) return `${minor.toUpperCase()} image`;
  if (major === "video" && minor) return `${minor.toUpperCase()} video`;
  if (major === "audio" && minor) return `${minor.toUpperCase()} audio`;
  const dot = (file.name || "").lastIndexOf(".");
  if (dot > 0 && file.name.length - dot <= 8) return `${file.name.slice(dot + 1).toUpperCase()} file`;
  return "File";
}

/** Whether the file shows inline: a server-made thumbnail of a known size. */
function inline(file) {
  return Boolean(file.thumbnail_url && file.width > 0 && file.height > 0);
}

/** The thumbnail's box, scaled down (never up) to fit THUMB_MAX_W x THUMB_MAX_H. */
export function fitted(width, height, maxW = THUMB_MAX_W, maxH = THUMB_MAX_H) {
  const scale = Math.min(1, maxW / width, maxH / height);
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

function thumbnail(file) {
  const [width, height] = fitted(file.width, file.height);
  // width/height reserve the box before the bytes arrive: no jump when it loads.
  const img = h("img", {
    class: "file-thumb-img",
    src: file.thumbnail_url,
    alt: file.name,
    width,
    height,
    loading: "lazy",
    decoding: "async",
  });
  const button = h(
    "button",
    {
      type: "button",
      class: "file-thumb",
      "aria-label": `Open image ${file.name} (${humanSize(file.size)})`,
      title: file.name,
      onclick: (event) => openViewer(file, event.currentTarget),
    },
    img,
  );
  // No thumbnail after all (gone, or the network): the file's card instead.
  img.addEventListener("error", () => button.replaceWith(card(file)), { once: true });
  return button;
}

function card(file) {
  const type = typeLabel(file);
  return h(
    "a",
    {
      class: "file-card",
      href: file.url,
      download: file.name,
      title: `Download ${file.name}`,
    },
    h("span", { class: "file-card-icon" }, icon(...FILE_ICON)),
    h(
      "span",
      { class: "file-card-text" },
      h("span", { class: "file-card-name" }, file.name),
      h(
        "span",
        { class: "file-card-meta" },
        h("span", { class: "file-size" }, humanSize(file.size)),
        type ? ` · ${type}` : null,
      ),
    ),
    h("span", { class: "file-card-get" }, icon(...DOWNLOAD_ICON)),
  );
}

/** The files of a message (none for a deleted one), or null. */
export function attachmentsOf(message) {
  const files = message.deleted ? [] : message.files || [];
  if (!files.length) return null;
  const images = files.filter(inline);
  const others = files.filter((file) => !inline(file));
  return h(
    "div",
    { class: "msg-files" },
    images.length ? h("div", { class: "file-thumbs" }, images.map(thumbnail)) : null,
    others.length ? h("div", { class: "file-cards" }, others.map(card)) : null,
  );
}

// ---------- The viewer: one image full size, over everything ----------

let viewer = null;
let opener = null;

function buildViewer() {
  const img = h("img", { class: "viewer-img", alt: "" });
  const name = h("span", { class: "viewer-name" });
  const size = h("span", { class: "viewer-size" });
  const download = h(
    "a",
    { class: "btn btn-ghost viewer-download", href: "#", download: "" },
    icon(...DOWNLOAD_ICON),
    "Download",
  );
  const close = h(
    "button",
    { type: "button", class: "icon-btn viewer-close", "aria-label": "Close the image" },
    icon(...CLOSE_ICON),
  );
  const dialog = h(
    "dialog",
    { id: "file-viewer", class: "viewer", "aria-label": "Image" },
    h(
      "div",
      { class: "viewer-bar" },
      h("span", { class: "viewer-title" }, name, size),
      download,
      close,
    ),
    h("div", { class: "viewer-stage" }, img),
  );
  // A click anywhere but the bar's controls closes it (Esc too, natively).
  dialog.addEventListener("click", (event) => {
    if (!event.target.closest("a, button") || event.target.closest(".viewer-close")) {
      dialog.close();
    }
  });
  dialog.addEventListener("close", () => {
    img.removeAttribute("src"); // stop a slow full-size load
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  });
  document.body.append(dialog);
  return { dialog, img, name, size, download, close };
}

/** Opens `file` (an image) full size; focus returns to `from` on close. */
export function openViewer(file, from = null) {
  if (!viewer) viewer = buildViewer();
  const { dialog, img, name, size, download, close } = viewer;
  opener = from;
  img.alt = file.name;
  // The image's own size reserves its box (scaled down by CSS to the screen).
  if (file.width > 0 && file.height > 0) {
    img.width = file.width;
    img.height = file.height;
  } else {
    img.removeAttribute("width");
    img.removeAttribute("height");
  }
  img.src = file.url;
  name.textContent = file.name;
  size.textContent = ` · ${humanSize(file.size)}${file.width ? ` · ${file.width}×${file.height}` : ""}`;
  download.href = file.url;
  download.setAttribute("download", file.name);
  download.setAttribute("aria-label", `Download ${file.name}`);
  dialog.setAttribute("aria-label", `Image ${file.name}`);
  if (!dialog.open) dialog.showModal();
  close.focus();
}

export function closeViewer() {
  if (viewer && viewer.dialog.open) viewer.dialog.close();
}

// Attaching files to a message: the paperclip, drag and drop, and paste.
//
// Each file uploads at once (POST /api/channels/{id}/files, multipart field
// `file`) through XMLHttpRequest, the one browser API with upload progress;
// it carries the same CSRF header as api.js and the session cookie. While it
// uploads it is a chip above the composer with a progress bar and a cancel
// button (which aborts the request); once uploaded, the chip holds the
// server's file id, and the send posts those ids with the text. A failed,
// refused (413: too large, over quota) or cancelled upload is never attached.
//
// A composer has one tray; its chips belong to a "slot" (the channel, or the
// thread), so switching channel shows that channel's chips, like its draft.

import { ApiError, handleAuthError } from "./api.js";
import { state } from "./state.js";
import { $, h, icon } from "./util.js";
import { humanSize } from "./viewer.js";

export const MAX_FILES = 10; // per message (the server's limit too)

const PAPERCLIP = [
  "M20 11.5l-7.8 7.8a5 5 0 01-7.1-7.1l8.5-8.5a3.3 3.3 0 014.7 4.7l-8.5 8.5a1.7 1.7 0 01-2.4-2.4l7.8-7.8",
];
const FILE_ICON = ["M6 3h8l4 4v14H6z", "M14 3v4h4"];
const IMAGE_ICON = ["M4 5h16v14H4z", "M4 16l5-5 4 4 3-3 4 4", "M15.5 9h.01"];
const X_ICON = ["M6 6l12 12M18 6L6 18"];

/** The per-file limit the server rendered into the page (bytes; 0: unknown). */
export function maxUploadBytes() {
  const meta = document.querySelector('meta[name="chatterwerks-max-upload"]');
  const value = Number(meta && meta.content);
  return Number.isFinite(value) && value > 0 ? value : 0;
}

/** Whether a drag carries files (not text or a link dragged from the page). */
function draggingFiles(event) {
  return Boolean(event.dataTransfer && [...event.dataTransfer.types].includes("Files"));
}

let nextLocalId = 1;
const trays = new Set();

/**
 * A composer's tray. `form`: the composer form (the tray goes above its box,
 * the paperclip into the box); `dropZone`: where files may be dropped;
 * `channelOf()`/`slotOf()`: where uploads go and whose chips show (null: none);
 * `onChange()`: the send button's state may have changed; `errorEl`: where
 * tray-wide errors (too many files) are said.
 */
export class Tray {
  constructor({ form, textarea, dropZone, channelOf, slotOf, onChange, errorEl, label }) {
    this.channelOf = channelOf;
    this.slotOf = slotOf;
    this.onChange = onChange;
    this.errorEl = errorEl;
    this.textarea = textarea;
    this.slots = new Map(); // slot -> [item]

    this.list = h("ul", {
      class: "file-tray",
      "aria-label": `Files to send with the ${label}`,
      hidden: true,
    });
    this.picker = h("input", {
      type: "file",
      multiple: true,
      class: "file-picker",
      tabindex: "-1",
      "aria-hidden": "true",
      hidden: true,
    });
    this.button = h(
      "button",
      {
        type: "button",
        class: "icon-btn attach-btn",
        "aria-label": `Attach files to the ${label}`,
        title: "Attach files (or drop or paste them here)",
      },
      icon(...PAPERCLIP),
    );
    const box = form.querySelector(".composer-box");
    form.insertBefore(this.list, box);
    box.insertBefore(this.button, box.firstChild);
    box.append(this.picker);

    this.button.addEventListener("click", () => {
      if (this.slotOf() !== null && !textarea.disabled) this.picker.click();
    });
    this.picker.addEventListener("change", () => {
      this.add([...this.picker.files]);
      this.picker.value = ""; // the same file may be picked again
      textarea.focus();
    });
    // Paste: files (a screenshot, a copied file) attach; a paste that also has
    // plain text (a spreadsheet's cells come with a picture of them) is text.
    textarea.addEventListener("paste", (event) => {
      const data = event.clipboardData;
      if (!data || !data.files || !data.files.length) return;
      if ([...data.types].includes("text/plain")) return;
      event.preventDefault();
      this.add([...data.files]);
    });
    let depth = 0;
    dropZone.addEventListener("dragenter", (event) => {
      if (!draggingFiles(event) || this.slotOf() === null) return;
      depth += 1;
      dropZone.classList.add("drop-active");
    });
    dropZone.addEventListener("dragleave", (event) => {
      if (!draggingFiles(event)) return;
      depth = Math.max(0, depth - 1);
      if (!depth) dropZone.classList.remove("drop-active");
    });
    dropZone.addEventListener("dragover", (event) => {
      if (!draggingFiles(event) || this.slotOf() === null) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    dropZone.addEventListener("drop", (event) => {
      depth = 0;
      dropZone.classList.remove("drop-active");
      if (!draggingFiles(event) || this.slotOf() === null) return;
      event.preventDefault();
      this.add([...event.dataTransfer.files]);
      textarea.focus();
    });
    trays.add(this);
  }

  items(slot = this.slotOf()) {
    return slot === null ? [] : this.slots.get(String(slot)) || [];
  }

  /** Uploads still in flight in the current slot (the send waits for them). */
  busy() {
    return this.items().some((item) => item.status === "uploading");
  }

  /** The ids of the current slot's uploaded files, in the order added. */
  readyIds() {
    return this.items()
      .filter((item) => item.status === "done")
      .map((item) => item.file.id);
  }

  /** Starts uploading `files` into the current slot (at most MAX_FILES attached). */
  add(files) {
    const slot = this.slotOf();
    const channelId = this.channelOf();
    // A composer that is off (a deleted thread root) takes no files either.
    if (slot === null || channelId === null || !files.length || this.textarea.disabled) return;
    const key = String(slot);
    const items = this.slots.get(key) || [];
    this.slots.set(key, items);
    const room = MAX_FILES - items.filter((item) => item.status !== "error").length;
    if (files.length > room) {
      this.errorEl.textContent = `A message takes at most ${MAX_FILES} files.`;
    }
    const limit = maxUploadBytes();
    for (const blob of files.slice(0, Math.max(0, room))) {
      const item = {
        localId: nextLocalId++,
        blob,
        name: blob.name || "file",
        size: blob.size,
        status: "uploading",
        loaded: 0,
        error: "",
        file: null,
        xhr: null,
        node: null,
      };
      items.push(item);
      if (limit && blob.size > limit) {
        item.status = "error";
        item.error = `Too large (${humanSize(blob.size)}): files up to ${humanSize(limit)}.`;
      } else {
        this.upload(item, channelId);
      }
    }
    this.render();
  }

  upload(item, channelId) {
    const xhr = new XMLHttpRequest();
    item.xhr = xhr;
    xhr.open("POST", `/api/channels/${channelId}/files`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-Requested-With", "chatterwerks");
    xhr.upload.addEventListener("progress", (event) => {
      item.loaded = event.loaded;
      this.update(item);
    });
    xhr.addEventListener("load", () => {
      item.xhr = null;
      let data = null;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        data = null; // a proxy's HTML error page, say
      }
      if (xhr.status === 201 && data && data.file) {
        item.status = "done";
        item.file = data.file;
      } else {
        const error = (data && data.error) || {};
        const err = new ApiError(
          xhr.status,
          error.code || `http_${xhr.status}`,
          error.message || `The server answered ${xhr.status}.`,
        );
        if (handleAuthError(err)) return;
        item.status = "error";
        item.error = err.message;
      }
      this.update(item);
      this.onChange();
    });
    xhr.addEventListener("error", () => {
      item.xhr = null;
      item.status = "error";
      item.error = "Upload failed: cannot reach the server.";
      this.update(item);
      this.onChange();
    });
    const form = new FormData();
    form.append("file", item.blob, item.name);
    xhr.send(form);
  }

  /** Cancels an upload (aborts it) or takes an uploaded/failed file off. */
  remove(item) {
    if (item.xhr) {
      const xhr = item.xhr;
      item.xhr = null;
      xhr.abort();
    }
    for (const [key, items] of this.slots) {
      const at = items.indexOf(item);
      if (at >= 0) items.splice(at, 1);
      if (!items.length) this.slots.delete(key);
    }
    this.render();
  }

  /** After a send from `slot`: its sent files and failed chips go. */
  sent(slot, ids) {
    const key = String(slot);
    const sent = new Set(ids);
    const items = (this.slots.get(key) || []).filter(
      (item) => item.status === "uploading" || (item.status === "done" && !sent.has(item.file.id)),
    );
    if (items.length) this.slots.set(key, items);
    else this.slots.delete(key);
    this.render();
  }

  /** Aborts everything (sign-out). */
  reset() {
    for (const items of this.slots.values()) {
      for (const item of items) {
        if (item.xhr) {
          const xhr = item.xhr;
          item.xhr = null;
          xhr.abort();
        }
      }
    }
    this.slots.clear();
    this.render();
  }

  /** Shows the current slot's chips (after a channel or thread switch). */
  render() {
    const items = this.items();
    this.list.replaceChildren(...items.map((item) => this.chip(item)));
    this.list.hidden = !items.length;
    this.onChange();
  }

  chip(item) {
    if (!item.node) {
      const remove = h(
        "button",
        { type: "button", class: "icon-btn small file-chip-remove" },
        icon(...X_ICON),
      );
      remove.addEventListener("click", () => this.remove(item));
      const bar = h("progress", { class: "file-chip-bar", max: String(Math.max(1, item.size)) });
      item.node = h(
        "li",
        { class: "file-chip", "data-local-id": item.localId },
        h(
          "span",
          { class: "file-chip-icon" },
          icon(...((item.blob.type || "").startsWith("image/") ? IMAGE_ICON : FILE_ICON)),
        ),
        h(
          "span",
          { class: "file-chip-text" },
          h("span", { class: "file-chip-name", title: item.name }, item.name),
          h("span", { class: "file-chip-status" }),
          bar,
        ),
        remove,
      );
    }
    this.update(item);
    return item.node;
  }

  update(item) {
    const node = item.node;
    if (!node) return;
    node.className = `file-chip ${item.status}`;
    const status = node.querySelector(".file-chip-status");
    const bar = node.querySelector(".file-chip-bar");
    const remove = node.querySelector(".file-chip-remove");
    bar.hidden = item.status !== "uploading";
    // The multipart body is a little larger than the file: cap at the file's size.
    bar.value = Math.min(item.loaded, Math.max(1, item.size));
    bar.setAttribute("aria-label", `Uploading ${item.name}`);
    if (item.status === "uploading") {
      const pct = item.size ? Math.min(100, Math.floor((100 * item.loaded) / item.size)) : 0;
      status.textContent = `${humanSize(item.size)} · ${pct}%`;
      status.removeAttribute("role");
      remove.setAttribute("aria-label", `Cancel the upload of ${item.name}`);
    } else if (item.status === "done") {
      status.textContent = humanSize(item.file.size);
      // An uploaded image shows its server-made thumbnail (same origin: no
      // blob: URL, so the page's img-src stays 'self').
      const iconBox = node.querySelector(".file-chip-icon");
      if (item.file.thumbnail_url && !iconBox.querySelector("img")) {
        iconBox.replaceChildren(
          h("img", { class: "file-chip-thumb", src: item.file.thumbnail_url, alt: "" }),
        );
      }
      status.removeAttribute("role");
      remove.setAttribute("aria-label", `Remove ${item.name}`);
    } else {
      status.textContent = item.error;
      status.setAttribute("role", "alert");
      remove.setAttribute("aria-label", `Dismiss ${item.name}`);
    }
    remove.title = remove.getAttribute("aria-label");
  }
}

/** Sign-out: every tray's uploads end. */
export function resetUploads() {
  for (const tray of trays) tray.reset();
}

/**
 * Files dropped outside a drop zone must not make the browser leave the page
 * to show them.
 */
export function guardDocumentDrops() {
  for (const type of ["dragover", "drop"]) {
    document.addEventListener(type, (event) => {
      if (draggingFiles(event) && !event.defaultPrevented) {
        event.preventDefault();
        if (type === "dragover") event.dataTransfer.dropEffect = "none";
      }
    });
  }
}

// The two composers' trays, made once by wireFiles().
export let channelTray = null;
export let threadTray = null;

/** Gives the channel's composer and the thread's composer their trays. */
export function wireFiles({ onChannelChange, onThreadChange }) {
  channelTray = new Tray({
    form: $("composer"),
    textarea: $("composer-input"),
    dropZone: document.querySelector("section.main"),
    channelOf: () => state.currentId,
    slotOf: () => state.currentId,
    onChange: onChannelChange,
    errorEl: $("composer-error"),
    label: "message",
  });
  threadTray = new Tray({
    form: $("thread-composer"),
    textarea: $("thread-input"),
    dropZone: $("thread"),
    channelOf: () => (state.thread ? state.thread.channelId : null),
    slotOf: () => (state.thread ? `${state.thread.channelId}:${state.thread.rootSeq}` : null),
    onChange: onThreadChange,
    errorEl: $("thread-error"),
    label: "reply",
  });
  guardDocumentDrops();
}

// The emoji picker: a small fixed set, the ones you use most first (counts kept in localStorage).

import { narrow } from "./sidebar.js";
import { $, h } from "./util.js";

// One grapheme each; ❤️ carries its emoji-presentation selector.
export const EMOJI = [
  "👍", "❤️", "😂", "🎉", "🙏", "👀", "🔥", "✅",
  "😊", "😄", "😍", "🤔", "😮", "😢", "😡", "👏",
  "🙌", "💯", "🚀", "⭐", "👌", "🤝", "💪", "😅",
  "🙂", "😉", "😎", "🥳", "👋", "☕", "🐛", "❌",
];
const STORAGE_KEY = "chatterwerks.emoji";

function useCounts() {
  try {
    const counts = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}");
    return counts && typeof counts === "object" ? counts : {};
  } catch {
    return {}; // storage off, or a value we did not write
  }
}

/** Counts one use of `emoji`, so it moves to the front of the picker. */
export function recordEmoji(emoji) {
  const counts = useCounts();
  counts[emoji] = (Number(counts[emoji]) || 0) + 1;
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(counts));
  } catch {
    // A full or disabled storage only loses the ordering.
  }
}

/** The picker's order: most used first, then the fixed order (a stable sort). */
export function emojiOrder() {
  const counts = useCounts();
  const used = Object.keys(counts).filter((e) => !EMOJI.includes(e) && counts[e] > 0);
  return [...EMOJI, ...used].sort((a, b) => (Number(counts[b]) || 0) - (Number(counts[a]) || 0));
}

let picker = null; // { el, anchor, onPick }

export function pickerOpen() {
  return picker !== null;
}

export function closePicker({ focusAnchor = false } = {}) {
  if (!picker) return;
  const { el, anchor } = picker;
  picker = null;
  el.hidden = true;
  el.replaceChildren();
  el.classList.remove("sheet");
  el.style.removeProperty("top");
  el.style.removeProperty("left");
  if (focusAnchor && anchor.isConnected) anchor.focus();
}

/**
 * Opens the picker next to `anchor` (a bottom sheet on a narrow screen);
 * `onPick(emoji)` gets the choice. Positioned through the CSSOM, which the
 * CSP (no inline style attributes) allows.
 */
export function openPicker(anchor, onPick) {
  closePicker();
  const el = $("emoji-picker");
  const grid = h(
    "div",
    { class: "emoji-grid", role: "group", "aria-label": "Emoji" },
    emojiOrder().map((emoji) =>
      h(
        "button",
        {
          type: "button",
          class: "emoji",
          "data-emoji": emoji,
          "aria-label": `React with ${emoji}`,
          title: emoji,
        },
        emoji,
      ),
    ),
  );
  el.replaceChildren(h("p", { class: "emoji-title" }, "Add a reaction"), grid);
  el.hidden = false;
  picker = { el, anchor, onPick };
  if (narrow.matches) {
    el.classList.add("sheet");
  } else {
    const box = anchor.getBoundingClientRect();
    const width = el.offsetWidth;
    const height = el.offsetHeight;
    const left = Math.max(8, Math.min(box.right - width, window.innerWidth - width - 8));
    let top = box.bottom + 6;
    if (top + height > window.innerHeight - 8) top = Math.max(8, box.top - height - 6);
    el.style.left = `${left}px`;
    el.style.top = `${top}px`;
  }
  grid.querySelector("button").focus();
}

export function wirePicker() {
  const el = $("emoji-picker");
  el.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-emoji]");
    if (!button || !picker) return;
    const { onPick } = picker;
    closePicker({ focusAnchor: true });
    onPick(button.dataset.emoji);
  });
  el.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      closePicker({ focusAnchor: true });
      return;
    }
    // Arrow keys move through the grid (8 a row).
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: 8, ArrowUp: -8 };
    if (!(event.key in moves)) return;
    const buttons = [...el.querySelectorAll("button[data-emoji]")];
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const next = buttons[at + moves[event.key]];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  });
  // A press anywhere else closes it; so does scrolling what it points at.
  document.addEventListener("pointerdown", (event) => {
    if (picker && !el.contains(event.target) && !picker.anchor.contains(event.target)) {
      closePicker();
    }
  });
  window.addEventListener("resize", () => closePicker());
  for (const id of ["messages", "thread-scroll"]) {
    $(id).addEventListener("scroll", () => {
      if (picker && !narrow.matches) closePicker();
    });
  }
}

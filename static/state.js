// What the server told us and what the page shows: the one state object and channel bookkeeping.

/**
 * `gen` changes on every sign-in and sign-out; async work started under an
 * older generation checks it after each await and drops its result.
 */
export const state = {
  gen: 0,
  me: null, // User
  cursor: null, // the events cursor we follow
  channels: new Map(), // id -> Channel (last_seq, last_read_seq kept current)
  currentId: null,
  // id -> { status: "loading"|"ready"|"error", msgs: Map(seq -> Message),
  //         hasMore, loadingOlder, scroll: null (at bottom) | scrollTop, error }
  // A channel's entry holds one contiguous run of seqs ending at its newest
  // message: the newest page from history, then every message the events
  // deliver. Channels never opened have no entry (events only bump last_seq).
  history: new Map(),
  members: new Map(), // id -> [User]
  drafts: new Map(), // id -> composer text
  sendKeys: new Map(), // id -> {text, key}: the Idempotency-Key of a send not yet confirmed
  sending: false,
  // The thread panel: null, or { channelId, rootSeq, status, msgs: Map(seq ->
  // reply), hasMore, loadingMore, error }. Its root is the channel's message.
  thread: null,
  threadSending: false,
  // The message being edited in place: null, or { channelId, seq, form, input, origin }.
  editing: null,
  pollAbort: null, // AbortController of the poll in flight
  repoll: false, // the poll was aborted on purpose (idleness changed): poll again now
  wake: null, // resolves the backoff wait early (the browser came back online)
  lastScrollTop: 0,
};

/** What the sidebar and views need to drop on sign-out or a state reload. */
export function resetState() {
  state.me = null;
  state.cursor = null;
  state.channels = new Map();
  state.currentId = null;
  state.history = new Map();
  state.members = new Map();
  state.drafts = new Map();
  state.sendKeys = new Map();
  state.sending = false;
  state.thread = null;
  state.threadSending = false;
  state.editing = null;
}

/**
 * Unread messages: the channel's message count less the messages your
 * marker has passed (edits and reactions take stream positions, so seqs
 * cannot tell). A server without the counts: positions, as before.
 */
export function unreadOf(channel) {
  if (channel.message_count === undefined) {
    return Math.max(0, channel.last_seq - channel.last_read_seq);
  }
  return Math.max(0, channel.message_count - (channel.read_count || 0));
}

/** A message of the channel was seen: what it tells of the channel (idempotent). */
export function noteMessage(channel, message) {
  channel.last_seq = Math.max(channel.last_seq, message.seq);
  if (message.number !== undefined) {
    channel.message_count = Math.max(channel.message_count || 0, message.number);
  }
}

/** The marker moved past `message` (ours moves with what we send, too). */
export function noteRead(channel, message) {
  channel.last_read_seq = Math.max(channel.last_read_seq, message.seq);
  if (message.number !== undefined) {
    channel.read_count = Math.max(channel.read_count || 0, message.number);
  }
}

export function mentionsOf(channel) {
  return Math.max(0, channel.mentions || 0);
}

/** True when `message` mentions the signed-in user (usernames compare case-blind). */
export function mentionsMe(message) {
  if (!state.me || !message.mentions) return false;
  const me = state.me.username.toLowerCase();
  return message.mentions.some((name) => name.toLowerCase() === me);
}

export function channelLabel(channel) {
  if (channel.kind === "home") return "Home";
  if (channel.kind === "direct") return channel.peer ? channel.peer.username : "Direct";
  return channel.name;
}

/** Sidebar order: Home, groups by name, direct channels by peer name. */
export function sortedChannels(kind) {
  return [...state.channels.values()]
    .filter((c) => c.kind === kind)
    .sort((a, b) =>
      channelLabel(a).localeCompare(channelLabel(b), undefined, { sensitivity: "base" }),
    );
}

function maxOf(a, b) {
  return a === undefined ? b : b === undefined ? a : Math.max(a, b);
}

export function upsertChannel(channel) {
  const known = state.channels.get(channel.id);
  if (known) {
    // Our local view may be ahead (events seen, markers moved): never go back.
    channel = {
      ...known,
      ...channel,
      last_seq: Math.max(known.last_seq, channel.last_seq),
      last_read_seq: Math.max(known.last_read_seq, channel.last_read_seq),
      message_count: maxOf(known.message_count, channel.message_count),
      read_count: maxOf(known.read_count, channel.read_count),
      // An answer computed before our read marker moved has stale mentions.
      mentions:
        channel.last_read_seq < known.last_read_seq || channel.mentions === undefined
          ? known.mentions
          : channel.mentions,
    };
  }
  delete channel.members;
  state.channels.set(channel.id, channel);
  return channel;
}

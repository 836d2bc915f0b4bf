// The chat page: a conversation with the twin. Each question POSTs /v1/answer/stream with the thread's earlier
// turns (questions and their final answers) as `history` and the chat's UUID as `conversation_id`; the
// server-sent events are read with fetch + ReadableStream (EventSource cannot POST). Each turn renders its own
// sources on `context`, appends `delta`s (their [n] citation markers linked to that turn's sources), marks the
// cited sources on `done`, and offers 👍/👎 (+ an optional comment) posted to /v1/feedback when the answer has a
// trace id. Stop aborts the request (an AbortController); "New chat" starts a new conversation. The thread lives
// in localStorage, so a reload shows it again.
// Server text (titles, evidence, the model's answer) only ever goes into textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("ask-form");
const queryBox = $("query");
const authorBox = $("author");
const askButton = $("ask");
const stopButton = $("stop");
const newChatButton = $("new-chat");
const thread = $("thread");
const errorBox = $("error");
const turnTemplate = $("turn-template");

const STORE_KEY = "llmtwin.chat.v1";
// The gateway's default limits (GATEWAY_MAX_HISTORY_TURNS, GATEWAY_MAX_QUERY_CHARS): the most recent answered
// turns are sent, each answer cut to its start; the gateway drops the oldest when they are too long together.
const MAX_HISTORY_TURNS = 20;
const MAX_TURN_CHARS = 2000;
const MAX_COMMENT_CHARS = 1000;

// [1], [2, 3]: the citation markers the RAG prompt asks the model to write.
const CITATION = /\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]/g;

let controller = null;
// The conversation: {id, turns: [{query, author, state, answer, sources, citations, meta, traceId, error,
// feedback}]}, kept in localStorage.
let chat = load();

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Outside secure contexts (plain http on a LAN address) there is no randomUUID: a v4 UUID by hand.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function load() {
  try {
    const stored = JSON.parse(localStorage.getItem(STORE_KEY) || "null");
    if (stored && typeof stored.id === "string" && Array.isArray(stored.turns)) {
      // A turn still running when the page went away was cut off there.
      for (const turn of stored.turns) {
        if (turn.state === "waiting" || turn.state === "streaming") turn.state = "stopped";
      }
      return stored;
    }
  } catch {
    // unreadable storage: start afresh
  }
  return { id: newId(), turns: [] };
}

function save() {
  // When storage is full, the oldest turns go first; the thread on screen keeps them until a reload.
  for (let drop = 0; drop < chat.turns.length; drop++) {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify({ id: chat.id, turns: chat.turns.slice(drop) }));
      return;
    } catch {
      // quota exceeded: try with fewer turns
    }
  }
}

function setBusy(busy) {
  askButton.disabled = busy;
  stopButton.disabled = !busy;
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function errorMessage(body, fallback) {
  const error = body && body.error;
  if (!error) return fallback;
  const violations = (error.field_violations || []).map((v) => `${v.field}: ${v.description}`);
  const detail = violations.length ? ` (${violations.join("; ")})` : "";
  return `${error.message || fallback}${detail} [${error.status || error.code}]`;
}

// Only http(s) links become hrefs: a "javascript:" link from a document would run in the page.
function safeLink(link) {
  try {
    const url = new URL(link, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : "";
  } catch {
    return "";
  }
}

// One entry per source document; servers older than `sources` send only chunks, numbered as their prompt did.
function sourcesOf(context) {
  if ((context.sources || []).length) return context.sources;
  return (context.documents || []).map((doc, i) => ({ ...doc, number: i + 1, chunks: [doc], evidence: "" }));
}

// The elements of one turn and the state of its answer's rendering: answerText[0:settled] is rendered for good,
// the rest (an unclosed "[...") is `pending`.
function turnView(turn, index) {
  const element = turnTemplate.content.firstElementChild.cloneNode(true);
  element.id = `turn-${index}`;
  element.dataset.turn = String(index);
  const view = {
    turn,
    index,
    element,
    answerBox: element.querySelector(".answer"),
    statusText: element.querySelector(".status"),
    metaText: element.querySelector(".meta"),
    sourcesList: element.querySelector(".sources"),
    feedback: element.querySelector(".feedback"),
    answerText: "",
    settled: 0,
    pending: null,
    sourceNumbers: new Set(),
  };
  element.querySelector(".question").textContent = turn.author ? `${turn.query} (author: ${turn.author})` : turn.query;
  for (const button of view.feedback.querySelectorAll(".rate")) {
    button.addEventListener("click", () => rate(view, button.dataset.rating));
  }
  return view;
}

function setState(view, state, label) {
  view.turn.state = state;
  view.answerBox.dataset.state = state;
  view.statusText.textContent = label || "";
}

function sourceId(view, number) {
  return `turn-${view.index}-source-${number}`;
}

function renderSources(view, sources) {
  view.sourcesList.replaceChildren();
  view.sourceNumbers = new Set();
  for (const source of sources) {
    view.sourceNumbers.add(source.number);
    const item = document.createElement("li");
    item.id = sourceId(view, source.number);
    item.dataset.testid = "source";
    item.dataset.number = String(source.number);
    const number = document.createElement("span");
    number.className = "number";
    number.textContent = `[${source.number}]`;
    const link = safeLink(source.link || "");
    const title = document.createElement(link ? "a" : "span");
    title.className = "title";
    title.textContent = source.title || source.document_id;
    if (link) {
      title.href = link;
      title.target = "_blank";
      title.rel = "noopener noreferrer";
    }
    const cited = document.createElement("span");
    cited.className = "cited-label";
    cited.textContent = "cited";
    cited.hidden = true;
    const details = document.createElement("div");
    details.className = "details";
    const score = typeof source.score === "number" ? source.score.toFixed(3) : "";
    const chunks = (source.chunks || []).length;
    details.textContent =
      `${source.author_full_name || source.author_id} · ${source.kind} · score ${score}` +
      (chunks > 1 ? ` · ${chunks} passages` : "");
    item.append(number, " ", title, " ", cited, details);
    if (source.evidence) {
      const evidence = document.createElement("blockquote");
      evidence.className = "evidence";
      evidence.textContent = source.evidence;
      item.append(evidence);
    }
    view.sourcesList.append(item);
  }
}

// A follow-up is searched as a standalone question; the page says how it was understood.
function showStandalone(view) {
  const line = view.element.querySelector(".standalone");
  const searched = view.turn.standaloneQuery || "";
  line.hidden = !searched || searched === view.turn.query;
  line.textContent = line.hidden ? "" : `searched as: ${searched}`;
}

function markCited(view, citations) {
  for (const citation of citations || []) {
    const item = document.getElementById(sourceId(view, citation.number));
    if (!item) continue;
    item.classList.add("cited");
    item.querySelector(".cited-label").hidden = false;
  }
}

// Text nodes and links for a piece of answer: each number of a [n] / [n, m] marker that names one of this turn's
// sources links to its entry; the text itself is kept exactly.
function citationNodes(view, text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(CITATION)) {
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    let plain = "";
    for (const part of match[0].split(/(\d+)/)) {
      if (/^\d+$/.test(part) && view.sourceNumbers.has(Number(part))) {
        if (plain) nodes.push(document.createTextNode(plain));
        plain = "";
        const link = document.createElement("a");
        link.className = "citation";
        link.href = `#${sourceId(view, Number(part))}`;
        link.dataset.source = String(Number(part));
        link.textContent = part;
        nodes.push(link);
      } else {
        plain += part;
      }
    }
    if (plain) nodes.push(document.createTextNode(plain));
    last = match.index + match[0].length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

function resetAnswer(view) {
  view.answerText = "";
  view.settled = 0;
  view.pending = null;
  view.answerBox.replaceChildren();
}

// Renders only what the delta changed: a marker can be split across deltas, so text from an unclosed "["
// waits as plain text until its "]" arrives.
function appendAnswer(view, text) {
  view.answerText += text;
  view.turn.answer = view.answerText;
  if (view.pending) view.pending.remove();
  const open = view.answerText.lastIndexOf("[");
  const end = open >= view.settled && view.answerText.indexOf("]", open) < 0 ? open : view.answerText.length;
  view.answerBox.append(...citationNodes(view, view.answerText.slice(view.settled, end)));
  view.settled = end;
  view.pending = end < view.answerText.length ? document.createTextNode(view.answerText.slice(end)) : null;
  if (view.pending) view.answerBox.append(view.pending);
}

function metaLine(data) {
  const usage = data.usage || {};
  return (
    `${usage.completion_tokens || 0} tokens · first token ${(data.time_to_first_token_s || 0).toFixed(2)} s` +
    ` · total ${(data.total_time_s || 0).toFixed(2)} s · ${data.model_id || ""}`
  );
}

// Rating is offered for an answer whose trace can take it (a trace id; none when traces are off).
function showFeedback(view) {
  const { turn, feedback } = view;
  feedback.hidden = !(turn.state === "done" && turn.traceId);
  const given = turn.feedback;
  for (const button of feedback.querySelectorAll(".rate")) {
    button.disabled = Boolean(given);
    button.setAttribute("aria-pressed", String(Boolean(given) && given.rating === button.dataset.rating));
  }
  const comment = feedback.querySelector(".comment");
  comment.disabled = Boolean(given);
  if (given) {
    comment.value = given.comment || "";
    const status = feedback.querySelector(".feedback-status");
    status.textContent = "Thanks for your feedback!";
    status.classList.remove("failed");
  }
}

async function rate(view, rating) {
  const status = view.feedback.querySelector(".feedback-status");
  const comment = view.feedback.querySelector(".comment").value.trim().slice(0, MAX_COMMENT_CHARS);
  const body = { trace_id: view.turn.traceId, rating };
  if (comment) body.comment = comment;
  const buttons = view.feedback.querySelectorAll(".rate");
  for (const button of buttons) button.disabled = true;
  status.classList.remove("failed");
  status.textContent = "sending…";
  try {
    const response = await fetch("/v1/feedback", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (response.status !== 202) {
      const payload = await response.json().catch(() => null);
      throw new Error(errorMessage(payload, `HTTP ${response.status}`));
    }
    view.turn.feedback = { rating, comment };
    save();
    showFeedback(view);
  } catch (error) {
    status.textContent = `Feedback not sent: ${error.message || String(error)}`;
    status.classList.add("failed");
    for (const button of buttons) button.disabled = false;
  }
}

// A stored turn, drawn again as it ended.
function renderStoredTurn(turn, index) {
  const view = turnView(turn, index);
  thread.append(view.element);
  renderSources(view, turn.sources || []);
  showStandalone(view);
  if (turn.answer) appendAnswer(view, turn.answer);
  markCited(view, turn.citations);
  view.metaText.textContent = turn.meta || "";
  const labels = { stopped: "stopped", error: "failed" };
  setState(view, turn.state || "done", labels[turn.state] || "");
  if (turn.state === "error" && turn.error) view.metaText.textContent = turn.error;
  showFeedback(view);
}

function renderThread() {
  thread.replaceChildren();
  chat.turns.forEach(renderStoredTurn);
}

// The conversation so far, oldest first: every earlier question that got a whole answer, and that answer.
function historyOf(turns) {
  const history = [];
  for (const turn of turns) {
    if (turn.state !== "done" || !(turn.answer || "").trim()) continue;
    history.push({ role: "user", content: turn.query.slice(0, MAX_TURN_CHARS) });
    history.push({ role: "assistant", content: turn.answer.slice(0, MAX_TURN_CHARS) });
  }
  return history.slice(-MAX_HISTORY_TURNS);
}

// Yields {event, data} for each server-sent event in a fetch response body.
async function* readEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

async function ask(event) {
  event.preventDefault();
  if (controller) return;
  const query = queryBox.value.trim();
  if (!query) return;
  const author = authorBox.value.trim();
  const body = { query, options: author ? { author } : {}, history: historyOf(chat.turns), conversation_id: chat.id };

  const turn = { query, author, state: "waiting", answer: "", sources: [], citations: [], meta: "" };
  chat.turns.push(turn);
  const view = turnView(turn, chat.turns.length - 1);
  thread.append(view.element);
  view.element.scrollIntoView({ block: "nearest" });
  queryBox.value = "";
  controller = new AbortController();
  const { signal } = controller;
  errorBox.hidden = true;
  setState(view, "waiting", "retrieving…");
  setBusy(true);
  save();

  try {
    const response = await fetch("/v1/answer/stream", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal,
    });
    if (!response.ok) {
      const payload = await response.json().catch(() => null);
      throw new Error(errorMessage(payload, `HTTP ${response.status}`));
    }
    for await (const { event: name, data } of readEvents(response.body, signal)) {
      if (name === "context") {
        turn.sources = sourcesOf(data);
        turn.standaloneQuery = data.standalone_query || "";
        renderSources(view, turn.sources);
        showStandalone(view);
        setState(view, "streaming", "writing…");
        save();
      } else if (name === "delta") {
        appendAnswer(view, data.text);
      } else if (name === "done") {
        turn.meta = metaLine(data);
        view.metaText.textContent = turn.meta;
        if (typeof data.answer === "string" && data.answer !== view.answerText) {
          // The service ended the answer short of what streamed (its loop guard cut a repetition).
          resetAnswer(view);
          appendAnswer(view, data.answer);
        }
        turn.citations = data.citations || [];
        turn.traceId = data.trace_id || "";
        markCited(view, turn.citations);
        setState(view, "done", "");
        showFeedback(view);
      } else if (name === "error") {
        throw new Error(errorMessage(data, "the answer stream failed"));
      }
    }
    if (turn.state !== "done") setState(view, "stopped", "stopped");
  } catch (error) {
    if (error.name === "AbortError") {
      setState(view, "stopped", "stopped");
    } else {
      turn.error = error.message || String(error);
      showError(turn.error);
      setState(view, "error", "failed");
    }
  } finally {
    save();
    controller = null;
    setBusy(false);
  }
}

function newChat() {
  if (controller) controller.abort();
  chat = { id: newId(), turns: [] };
  save();
  renderThread();
  errorBox.hidden = true;
  queryBox.focus();
}

form.addEventListener("submit", ask);
stopButton.addEventListener("click", () => {
  if (controller) controller.abort();
});
newChatButton.addEventListener("click", newChat);
queryBox.addEventListener("keydown", (event) => {
  // Enter asks; Shift+Enter makes a new line.
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

renderThread();
setBusy(false);

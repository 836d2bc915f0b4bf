// The chat page: POST /v1/answer/stream, read the server-sent events with fetch + ReadableStream
// (EventSource cannot POST), render sources on `context`, append `delta`s (their [n] citation markers
// linked to the sources), mark the cited sources on `done`, stop with an AbortController.
// Server text (titles, evidence, the model's answer) only ever goes into textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("ask-form");
const queryBox = $("query");
const authorBox = $("author");
const askButton = $("ask");
const stopButton = $("stop");
const answerBox = $("answer");
const sourcesList = $("sources");
const errorBox = $("error");
const statusText = $("status");
const metaText = $("meta");

// [1], [2, 3]: the citation markers the RAG prompt asks the model to write.
const CITATION = /\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]/g;

let controller = null;
// The answer so far; answerText[0:settled] is rendered for good, the rest (an unclosed "[...") is `pending`.
let answerText = "";
let settled = 0;
let pending = null;
// The numbers of the sources shown: only markers naming one of them become links.
let sourceNumbers = new Set();

function setState(state, label) {
  answerBox.dataset.state = state;
  statusText.textContent = label || "";
  const busy = state === "waiting" || state === "streaming";
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

function renderSources(context) {
  sourcesList.replaceChildren();
  sourceNumbers = new Set();
  for (const source of sourcesOf(context)) {
    sourceNumbers.add(source.number);
    const item = document.createElement("li");
    item.id = `source-${source.number}`;
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
    sourcesList.append(item);
  }
}

function markCited(citations) {
  for (const citation of citations || []) {
    const item = document.getElementById(`source-${citation.number}`);
    if (!item) continue;
    item.classList.add("cited");
    item.querySelector(".cited-label").hidden = false;
  }
}

// Text nodes and links for a piece of answer: each number of a [n] / [n, m] marker that names a shown
// source links to its entry; the text itself is kept exactly.
function citationNodes(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(CITATION)) {
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    let plain = "";
    for (const part of match[0].split(/(\d+)/)) {
      if (/^\d+$/.test(part) && sourceNumbers.has(Number(part))) {
        if (plain) nodes.push(document.createTextNode(plain));
        plain = "";
        const link = document.createElement("a");
        link.className = "citation";
        link.href = `#source-${Number(part)}`;
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

function resetAnswer() {
  answerText = "";
  settled = 0;
  pending = null;
  answerBox.replaceChildren();
}

// Renders only what the delta changed: a marker can be split across deltas, so text from an unclosed "["
// waits as plain text until its "]" arrives.
function appendAnswer(text) {
  answerText += text;
  if (pending) pending.remove();
  const open = answerText.lastIndexOf("[");
  const end = open >= settled && answerText.indexOf("]", open) < 0 ? open : answerText.length;
  answerBox.append(...citationNodes(answerText.slice(settled, end)));
  settled = end;
  pending = end < answerText.length ? document.createTextNode(answerText.slice(end)) : null;
  if (pending) answerBox.append(pending);
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
  const query = queryBox.value.trim();
  if (!query) return;
  const author = authorBox.value.trim();
  const body = { query, options: author ? { author } : {} };

  controller = new AbortController();
  resetAnswer();
  sourcesList.replaceChildren();
  sourceNumbers = new Set();
  metaText.textContent = "";
  errorBox.hidden = true;
  setState("waiting", "retrieving…");

  try {
    const response = await fetch("/v1/answer/stream", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const payload = await response.json().catch(() => null);
      throw new Error(errorMessage(payload, `HTTP ${response.status}`));
    }
    for await (const { event: name, data } of readEvents(response.body, controller.signal)) {
      if (name === "context") {
        renderSources(data);
        setState("streaming", "writing…");
      } else if (name === "delta") {
        appendAnswer(data.text);
      } else if (name === "done") {
        const usage = data.usage || {};
        metaText.textContent =
          `${usage.completion_tokens || 0} tokens · first token ${(data.time_to_first_token_s || 0).toFixed(2)} s` +
          ` · total ${(data.total_time_s || 0).toFixed(2)} s · ${data.model_id || ""}`;
        if (typeof data.answer === "string" && data.answer !== answerText) {
          // The service ended the answer short of what streamed (its loop guard cut a repetition).
          resetAnswer();
          appendAnswer(data.answer);
        }
        markCited(data.citations);
        setState("done", "");
      } else if (name === "error") {
        throw new Error(errorMessage(data, "the answer stream failed"));
      }
    }
    if (answerBox.dataset.state !== "done") setState("stopped", "stopped");
  } catch (error) {
    if (error.name === "AbortError") {
      setState("stopped", "stopped");
    } else {
      showError(error.message || String(error));
      setState("error", "");
    }
  } finally {
    controller = null;
  }
}

form.addEventListener("submit", ask);
stopButton.addEventListener("click", () => {
  if (controller) controller.abort();
});
queryBox.addEventListener("keydown", (event) => {
  // Enter asks; Shift+Enter makes a new line.
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

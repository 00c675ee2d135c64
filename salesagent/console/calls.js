// The calls page: the caller's recent calls (GET /calls, paged) and one call's history
// (GET /conversation/{id}).
import { apiKey, clockTime, duration, el, renderState, request, setApiKey } from "./common.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;
let offset = 0;

async function showPage(at) {
  let page;
  try {
    page = await request(`/calls?limit=${PAGE}&offset=${at}`);
  } catch (error) {
    $("status").textContent = error.message;
    $("status").dataset.kind = "error";
    return;
  }
  offset = at;
  $("status").textContent = page.total ? "" : "No calls yet.";
  $("status").dataset.kind = "";
  $("calls").replaceChildren(
    ...page.calls.map((call) => {
      const row = el(
        "tr",
        { "data-call-id": call.call_id, tabindex: "0" },
        el("td", {}, `${new Date(call.start_time).toLocaleString()}`),
        el("td", {}, call.customer_name),
        el("td", {}, call.phone_number),
        el("td", {}, duration(call.duration_s)),
        el("td", {}, String(call.turns)),
        el("td", {}, call.stage.replaceAll("_", " ")),
        el("td", {}, call.disposition || (call.is_active ? "in progress" : "–")),
      );
      row.addEventListener("click", () => showCall(call.call_id));
      row.addEventListener("keydown", (event) => event.key === "Enter" && showCall(call.call_id));
      return row;
    }),
  );
  const last = Math.min(at + page.calls.length, page.total);
  $("page").textContent = page.total ? `${at + 1}–${last} of ${page.total}` : "";
  $("newer").disabled = at === 0;
  $("older").disabled = page.next_offset === null;
}

async function showCall(callId) {
  let session;
  try {
    session = await request(`/conversation/${callId}`);
  } catch (error) {
    $("status").textContent = error.message;
    $("status").dataset.kind = "error";
    return;
  }
  $("detail").hidden = false;
  $("detail-title").textContent = `${session.customer_name}, ${clockTime(session.start_time)}`;
  renderState($("state"), session);
  $("history").replaceChildren(
    ...session.history.map((entry) =>
      el(
        "li",
        { class: `line ${entry.speaker}${entry.interrupted ? " interrupted" : ""}` },
        el("span", { class: "who" }, `${entry.speaker === "agent" ? "Agent" : "Lead"} · ${clockTime(entry.timestamp)}`),
        el("span", { class: "text" }, entry.text + (entry.interrupted ? " … (interrupted)" : "")),
      ),
    ),
  );
}

$("key").value = apiKey();
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey($("key").value.trim());
  showPage(0);
});
$("newer").addEventListener("click", () => showPage(Math.max(0, offset - PAGE)));
$("older").addEventListener("click", () => showPage(offset + PAGE));
showPage(0);

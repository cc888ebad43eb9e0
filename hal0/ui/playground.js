// The playground: chat (streamed), speech, transcription and images, through the same /v1
// routes any OpenAI client uses.
import { readSSE, request } from "./api.js";
import { $, act, h } from "./dom.js";

const history = []; // the conversation sent with each message
let chatCtrl = null;

export async function refreshModels() {
  const sel = $("#chat-model");
  let data;
  try {
    data = await (await fetch("/v1/models", { cache: "no-store" })).json();
  } catch { return; }
  const chat = data.data.filter((m) => m.modality === "chat" || m.modality === "remote");
  const keep = sel.value;
  sel.replaceChildren(...chat.map((m) => h("option", { value: m.id }, m.slot && m.id !== m.slot ? `${m.id} (${m.slot})` : m.id)));
  if (chat.some((m) => m.id === keep)) sel.value = keep;
}

function bubble(role, text) {
  const li = h("li", { class: `msg ${role}`, dataset: { role } }, h("span", { class: "who" }, role === "user" ? "You" : "Model"),
    h("div", { class: "text" }, text));
  $("#chat-log").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

async function send(text) {
  const out = $("#chat-out");
  out.textContent = "";
  history.push({ role: "user", content: text });
  bubble("user", text);
  const li = bubble("assistant", "");
  const body = li.querySelector(".text");
  li.setAttribute("aria-busy", "true");
  let chunks = 0, answer = "";
  chatCtrl = new AbortController();
  $("#chat-send").disabled = true;
  $("#chat-stop").hidden = false;
  try {
    const max = parseInt($("#chat-max").value, 10);
    const resp = await request("POST", "/v1/chat/completions", {
      model: $("#chat-model").value || undefined, messages: history, stream: true,
      ...(max > 0 ? { max_tokens: max } : {}),
    }, { signal: chatCtrl.signal });
    await readSSE(resp, (type, data) => {
      if (data === "[DONE]") return;
      const delta = JSON.parse(data).choices?.[0]?.delta?.content;
      if (!delta) return;
      answer += delta;
      chunks += 1;
      body.textContent = answer;
      li.dataset.chunks = String(chunks);
    });
    history.push({ role: "assistant", content: answer });
  } catch (e) {
    if (e.name !== "AbortError") {
      out.textContent = e.code ? `${e.message} (${e.code})` : String(e.message || e);
      out.classList.add("err");
    }
    if (answer) history.push({ role: "assistant", content: answer });
  } finally {
    li.setAttribute("aria-busy", "false");
    li.dataset.done = "1";
    $("#chat-send").disabled = false;
    $("#chat-stop").hidden = true;
    chatCtrl = null;
  }
}

let recorder = null;

async function transcribe(blob, filename, out) {
  const form = new FormData();
  form.append("file", blob, filename);
  const resp = await request("POST", "/v1/audio/transcriptions", form);
  const data = await resp.json();
  $("#stt-text").textContent = data.text ?? JSON.stringify(data);
  return out;
}

async function toggleRecording(button) {
  if (recorder) { recorder.stop(); return; }
  const out = $("#stt-out");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    out.textContent = `No microphone: ${e.message}`;
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    button.textContent = "Record";
    button.setAttribute("aria-pressed", "false");
    const blob = new Blob(chunks, { type: chunks[0]?.type || "audio/webm" });
    act(button, out, () => transcribe(blob, "recording.webm", out));
  };
  recorder.start();
  button.textContent = "Stop recording";
  button.setAttribute("aria-pressed", "true");
}

export function mount() {
  $("#chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("#chat-input").value.trim();
    if (!text || chatCtrl) return;
    $("#chat-input").value = "";
    send(text);
  });
  $("#chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#chat-form").requestSubmit(); }
  });
  $("#chat-stop").addEventListener("click", () => chatCtrl && chatCtrl.abort());
  $("#chat-clear").addEventListener("click", () => { history.length = 0; $("#chat-log").replaceChildren(); });

  $("#tts-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("#tts-input").value.trim();
    if (!input) return;
    act(e.submitter, $("#tts-out"), async () => {
      const resp = await request("POST", "/v1/audio/speech",
        { input, voice: $("#tts-voice").value || "alloy", response_format: "wav" });
      const audio = $("#tts-audio");
      if (audio.src) URL.revokeObjectURL(audio.src);
      audio.src = URL.createObjectURL(await resp.blob());
      audio.hidden = false;
      audio.play().catch(() => {}); // autoplay may be refused; the controls are there
    });
  });

  $("#stt-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const file = $("#stt-file").files[0];
    if (!file) { $("#stt-out").textContent = "Choose an audio file first, or record."; return; }
    act(e.submitter, $("#stt-out"), () => transcribe(file, file.name));
  });
  $("#stt-record").addEventListener("click", (e) => toggleRecording(e.currentTarget));

  $("#img-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const prompt = $("#img-prompt").value.trim();
    if (!prompt) return;
    act(e.submitter, $("#img-out"), async () => {
      $("#img-status").textContent = "Drawing… (minutes on a CPU)";
      let data;
      try {
        const resp = await request("POST", "/v1/images/generations",
          { prompt, size: $("#img-size").value.trim(), response_format: "b64_json", n: 1 });
        data = await resp.json();
      } finally {
        $("#img-status").textContent = "";
      }
      const img = $("#img-out-img");
      img.src = `data:image/png;base64,${data.data[0].b64_json}`;
      img.alt = prompt;
      img.hidden = false;
    });
  });
}

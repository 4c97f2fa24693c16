// The playground: send the chat as an OpenAI request body, read the Server-Sent Events it answers
// and show the same request as curl and openai-python. No dependencies, no build step.
(function () {
  "use strict";
  const form = document.getElementById("playground");
  if (!form) return;
  const chat = document.getElementById("chat");
  const status = document.getElementById("status");
  const history = [];

  function request(next) {
    const messages = [];
    const system = form.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...history);
    if (next) messages.push({ role: "user", content: next });
    const body = { model: form.model.value, messages: messages };
    const number = (field) => (field.value.trim() === "" ? null : Number(field.value));
    for (const name of ["temperature", "top_p", "max_tokens", "seed"]) {
      const value = number(form[name]);
      if (value !== null) body[name] = value;
    }
    if (form.stop.value) body.stop = [form.stop.value];
    const schema = form.schema.value.trim();
    if (schema) {
      let parsed;
      try {
        parsed = JSON.parse(schema);
      } catch (error) {
        throw new Error(`The JSON Schema is not JSON: ${error.message}`);
      }
      body.response_format = { type: "json_schema", json_schema: { name: "answer", schema: parsed, strict: true } };
    }
    body.stream = true;
    body.stream_options = { include_usage: true };
    return body;
  }

  function literal(value) {  // a JSON value written as Python (True, False, None)
    if (value === null) return "None";
    if (value === true || value === false) return value ? "True" : "False";
    if (Array.isArray(value)) return `[${value.map(literal).join(", ")}]`;
    if (typeof value === "object") {
      return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${literal(v)}`).join(", ")}}`;
    }
    return JSON.stringify(value);
  }

  function python(body) {
    const args = [`    model=${JSON.stringify(body.model)},`,
      `    messages=${JSON.stringify(body.messages, null, 4).replace(/\n/g, "\n    ")},`];
    for (const name of ["temperature", "top_p", "max_tokens", "seed", "stop", "response_format"]) {
      if (body[name] !== undefined) args.push(`    ${name}=${literal(body[name])},`);
    }
    args.push("    stream=True,", '    stream_options={"include_usage": True},');
    return ["import os", "from openai import OpenAI", "",
      `client = OpenAI(base_url="${form.dataset.base}/v1", api_key=os.environ["AIMASS_KEY"])`,
      "stream = client.chat.completions.create(", ...args, ")",
      "for chunk in stream:", "    if chunk.choices:",
      '        print(chunk.choices[0].delta.content or "", end="", flush=True)'].join("\n");
  }

  function snippets(body) {
    const json = JSON.stringify(body).replace(/'/g, "'\\''");
    document.getElementById("curl").textContent =
      `curl -sN ${form.dataset.base}/v1/chat/completions \\\n` +
      `  -H "Authorization: Bearer $AIMASS_KEY" -H 'Content-Type: application/json' \\\n  -d '${json}'`;
    document.getElementById("python").textContent = python(body);
  }

  function bubble(role, text) {
    const item = document.createElement("div");
    item.className = "message " + role;
    const who = document.createElement("strong");
    who.textContent = role === "user" ? "You" : "Model";
    const said = document.createElement("p");
    said.textContent = text;
    item.append(who, said);
    chat.append(item);
    return said;
  }

  async function failure(answer) {
    const html = await answer.text();
    const text = new DOMParser().parseFromString(html, "text/html").body.textContent.trim();
    return `${answer.status}: ${text.replace(/\s+/g, " ").slice(0, 400)}`;
  }

  async function send(event) {
    event.preventDefault();
    const text = form.message.value.trim();
    if (!text) return;
    let body;
    try {
      body = request(text);
    } catch (error) {
      status.textContent = error.message;
      return;
    }
    snippets(body);
    bubble("user", text);
    const said = bubble("assistant", "");
    form.send.disabled = true;
    delete status.dataset.done;
    status.textContent = "Generating…";
    const began = performance.now();
    let answer = "", usage = null;
    try {
      const data = new FormData();
      data.append("csrf", form.csrf.value);
      data.append("body", JSON.stringify(body));
      const reply = await fetch(form.action, { method: "POST", body: data, headers: { "HX-Request": "true" } });
      const type = reply.headers.get("content-type") || "";
      if (!reply.ok || !type.startsWith("text/event-stream")) throw new Error(await failure(reply));
      const reader = reply.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, end).replace(/^data: /, "");
          buffer = buffer.slice(end + 2);
          if (line === "[DONE]") continue;
          const chunk = JSON.parse(line);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          for (const choice of chunk.choices || []) {
            if (choice.delta && choice.delta.content) {
              answer += choice.delta.content;
              said.textContent = answer;
            }
          }
        }
      }
      history.push({ role: "user", content: text }, { role: "assistant", content: answer });
      form.message.value = "";
      const seconds = (performance.now() - began) / 1000;
      status.textContent = usage
        ? `${usage.completion_tokens} tokens in ${seconds.toFixed(1)} s (${(usage.completion_tokens / seconds).toFixed(1)} tokens/s), prompt ${usage.prompt_tokens} tokens.`
        : `Done in ${seconds.toFixed(1)} s.`;
      status.dataset.done = "true";
    } catch (error) {
      said.parentElement.remove();
      status.textContent = "";
      const alert = document.createElement("p");
      alert.className = "error";
      alert.setAttribute("role", "alert");
      alert.textContent = error.message;
      chat.append(alert);
    } finally {
      form.send.disabled = false;
    }
  }

  form.addEventListener("submit", send);
  function refresh() {
    try {
      snippets(request());
      if (status.dataset.invalid) status.textContent = "";
      delete status.dataset.invalid;
    } catch (error) {
      status.textContent = error.message;  // a JSON Schema still being typed
      status.dataset.invalid = "true";
    }
  }

  form.addEventListener("input", (event) => { if (event.target !== form.message) refresh(); });
  form.addEventListener("change", refresh);
  document.getElementById("clear").addEventListener("click", () => {
    history.length = 0;
    chat.replaceChildren();
    status.textContent = "";
    refresh();
  });
  refresh();
})();

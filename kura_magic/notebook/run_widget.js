// The kura_magic run panel: draws what Python sends (texts, rows, bar parts) and, while the
// run is going, ticks the elapsed time on from the last value Python sent.

// formatting.duration, for the ticking elapsed time
function duration(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(2)} s`;
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)} min ${whole % 60} s`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function bar(model) {
  const total = Math.max(model.get("total"), 1);
  const progress = element("div", "kura-progress");
  progress.setAttribute("role", "progressbar");
  progress.setAttribute("aria-valuemax", String(model.get("total")));
  progress.setAttribute("aria-valuenow", String(model.get("done")));
  for (const part of model.get("parts")) {
    if (!part.count) continue;
    const piece = element("div", `kura-bar-${part.name}`);
    piece.style.width = `${(100 * part.count) / total}%`;
    piece.style.background = part.colour;
    piece.title = `${part.count} ${part.name}`;
    progress.appendChild(piece);
  }
  return progress;
}

function piece(name, text, colours) {
  const span = element("span", `kura-piece ${name}`, text);
  if (colours[name]) span.style.setProperty("--kura-swatch", colours[name]);
  if (name === "kura-errors" && !/^0 /.test(text)) span.classList.add("kura-alert");
  return span;
}

function draw(model, body) {
  const texts = model.get("texts");
  const colours = Object.fromEntries(model.get("parts").map((p) => [`kura-${p.name}`, p.colour]));
  const [header, ...lines] = model.get("rows");
  const head = element("div", "kura-head");
  head.appendChild(bar(model));
  for (const name of header || []) {
    if (texts[name]) head.appendChild(piece(name, texts[name], colours));
  }
  head.title = (header || []).filter((name) => texts[name]).map((name) => texts[name]).join(" · ");
  const children = [head];
  for (const row of lines) {
    const shown = row.filter((name) => texts[name]);
    if (!shown.length) continue;
    const line = element("div", "kura-line");
    shown.forEach((name) => line.appendChild(piece(name, texts[name], colours)));
    children.push(line);
  }
  body.replaceChildren(...children);
}

function render({ model, el }) {
  el.classList.add("kura-panel", "kura-live", "kura-run");
  const body = element("div", "kura-run-body");
  el.appendChild(body);
  let sentAt = performance.now();
  for (const [name, colour] of Object.entries(model.get("colours"))) {
    el.style.setProperty(`--kura-colour-${name}`, colour);
  }
  const redraw = () => {
    el.dataset.state = model.get("state");
    draw(model, body);
  };
  const tick = () => {
    if (!model.get("running")) return;
    const elapsed = body.querySelector(".kura-elapsed");
    const seconds = model.get("elapsed_s") + (performance.now() - sentAt) / 1000;
    if (elapsed) elapsed.textContent = `elapsed ${duration(seconds)}`;
  };
  model.on("change:elapsed_s", () => { sentAt = performance.now(); });
  model.on("change", () => { redraw(); tick(); });
  redraw();
  const timer = setInterval(tick, 100);
  return () => clearInterval(timer);
}

export default { render };

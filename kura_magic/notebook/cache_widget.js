// The kura_magic cache panel (`%kura`): draws what Python sends (texts, rows, buttons, the
// experiments) and sends back a click or a chosen experiment; Python answers with a new state.

let chooserCount = 0;

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function lines(model) {
  const texts = model.get("texts");
  const drawn = [];
  for (const row of model.get("rows")) {
    const shown = row.filter((name) => texts[name]);
    if (!shown.length) continue;
    const line = element("div", "kura-line");
    shown.forEach((name) => line.appendChild(element("span", `kura-piece ${name}`, texts[name])));
    drawn.push(line);
  }
  return drawn;
}

function chooser(model, listId) {
  const label = element("label", "kura-experiment-select", "experiment");
  const input = document.createElement("input");
  input.type = "text";
  input.placeholder = "experiment name";
  input.value = model.get("experiment");
  input.disabled = model.get("disabled");
  input.setAttribute("list", listId);
  input.addEventListener("change", () => model.send({ choose: input.value }));
  const options = document.createElement("datalist");
  options.id = listId;
  for (const name of model.get("experiments")) {
    const option = document.createElement("option");
    option.value = name;
    options.appendChild(option);
  }
  label.append(input, options);
  return label;
}

function controls(model, listId) {
  const row = element("div", "kura-controls");
  row.appendChild(chooser(model, listId));
  row.appendChild(element("span", "kura-gap"));
  for (const button of model.get("buttons")) {
    const node = element("button", `kura-destructive ${button.css}`, button.label);
    node.type = "button";
    node.disabled = model.get("disabled");
    if (button.armed) node.classList.add("kura-armed");
    node.addEventListener("click", () => model.send({ action: button.action }));
    row.appendChild(node);
  }
  return row;
}

function render({ model, el }) {
  el.classList.add("kura-panel", "kura-live", "kura-cache");
  for (const [name, colour] of Object.entries(model.get("colours"))) {
    el.style.setProperty(`--kura-colour-${name}`, colour);
  }
  const listId = `kura-experiments-${++chooserCount}`;
  const body = element("div", "kura-cache-body");
  el.appendChild(body);
  const redraw = () => body.replaceChildren(...lines(model), controls(model, listId));
  model.on("change", redraw);
  redraw();
}

export default { render };

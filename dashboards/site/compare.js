// The compare view: places the numbers compare-data.js holds (computed by the harness when the site was
// built) and keeps the selection in the URL hash. It computes nothing, and writes store strings only as
// text (never as HTML), so a method name holding markup stays text.
"use strict";
(function () {
  var data = window.HARNESS_COMPARE || {blocks: []};
  var blocks = data.blocks;
  var form = document.getElementById("compare-form");
  var controls = {
    family: document.getElementById("family"), dataset: document.getElementById("dataset"),
    protocol: document.getElementById("protocol"), block: document.getElementById("block"),
    reference: document.getElementById("reference"), pareto: document.getElementById("pareto")
  };
  var methodsBox = document.getElementById("methods");
  var status = document.getElementById("status");

  function el(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function readHash() {
    var state = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) { return; }
      var i = part.indexOf("=");
      var key = decodeURIComponent(i < 0 ? part : part.slice(0, i));
      state[key] = i < 0 ? "" : decodeURIComponent(part.slice(i + 1));
    });
    state.methods = state.methods ? state.methods.split("\n") : null;
    return state;
  }

  function writeHash(state) {
    var parts = [];
    ["family", "dataset", "protocol", "block", "reference", "pareto"].forEach(function (k) {
      if (state[k]) { parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(state[k])); }
    });
    parts.push("methods=" + encodeURIComponent(state.methods.join("\n")));
    history.replaceState(null, "", "#" + parts.join("&"));
  }

  function fill(select, values, labels, chosen, keepAll) {
    var keep = keepAll ? [select.options[0]] : [];
    select.textContent = "";
    keep.forEach(function (o) { select.appendChild(o); });
    values.forEach(function (v, i) {
      var option = el("option", labels ? labels[i] : v, {value: v});
      select.appendChild(option);
    });
    select.value = values.indexOf(chosen) >= 0 ? chosen : (keepAll ? "" : (values[0] || ""));
  }

  function distinct(key) {
    var seen = [];
    blocks.forEach(function (b) { if (seen.indexOf(b[key]) < 0) { seen.push(b[key]); } });
    return seen.sort();
  }

  function visibleBlocks() {
    return blocks.filter(function (b) {
      return (!controls.family.value || b.family === controls.family.value) &&
        (!controls.dataset.value || b.dataset === controls.dataset.value) &&
        (!controls.protocol.value || b.protocol === controls.protocol.value);
    });
  }

  function currentBlock() {
    return blocks.filter(function (b) { return b.key === controls.block.value; })[0];
  }

  function selectedMethods() {
    return Array.prototype.slice.call(methodsBox.querySelectorAll("input:checked")).map(function (i) {
      return i.value;
    });
  }

  function buildMethods(block, chosen) {
    Array.prototype.slice.call(methodsBox.querySelectorAll("label")).forEach(function (l) { l.remove(); });
    block.methods.forEach(function (m, i) {
      var id = "method-" + i;
      var box = el("input", null, {type: "checkbox", id: id, name: "method", value: m});
      box.checked = chosen ? chosen.indexOf(m) >= 0 : i < 2;
      var label = el("label", null, {"for": id});
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + m));
      methodsBox.appendChild(label);
    });
  }

  function table(caption, heads, rows) {
    var t = el("table", null, {"class": "site-table compare"});
    t.appendChild(el("caption", caption));
    var head = el("thead"), tr = el("tr");
    heads.forEach(function (h) { tr.appendChild(el("th", h, {scope: "col"})); });
    head.appendChild(tr);
    t.appendChild(head);
    var body = el("tbody");
    rows.forEach(function (cells) {
      var row = el("tr");
      cells.forEach(function (c, i) {
        var cell = el(i === 0 ? "th" : "td", c.text === undefined ? c : c.text, i === 0 ? {scope: "row"} : {});
        if (c.css) { cell.className = c.css; }
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
    t.appendChild(body);
    return t;
  }

  function metricLabel(m) {
    return m.name + (m.better === "higher" ? " \u2191" : " \u2193") + (m.unit ? " (" + m.unit + ")" : "");
  }

  function render() {
    var block = currentBlock();
    var side = document.getElementById("side-table"), diff = document.getElementById("diff-table");
    var paretoTable = document.getElementById("pareto-table"), plot = document.getElementById("pareto-plot");
    [side, diff, paretoTable, plot].forEach(function (n) { n.textContent = ""; });
    if (!block) { status.textContent = "No suite matches these filters."; return; }
    var methods = selectedMethods();
    fill(controls.reference, methods, null, controls.reference.value, false);
    var reference = controls.reference.value;
    writeHash({family: controls.family.value, dataset: controls.dataset.value, protocol: controls.protocol.value,
               block: block.key, reference: reference, pareto: controls.pareto.value, methods: methods});
    status.textContent = methods.length + " method(s) of " + block.suite + " \u00b7 " + block.benchmark +
      " \u00b7 " + block.protocol_label + " selected" + (methods.length < 2 ? ": pick at least two to compare." : ".");
    side.appendChild(table("Mean over seeds [95% Student-t interval], " + block.suite + " \u00b7 " + block.benchmark,
      ["metric"].concat(methods), block.metrics.map(function (m) {
        return [metricLabel(m)].concat(methods.map(function (x) { return block.means[x][m.name]; }));
      })));
    var others = methods.filter(function (m) { return m !== reference; });
    if (reference && others.length) {
      diff.appendChild(table("Paired differences, method - " + reference + ", [95% Student-t interval] (n pairs)",
        ["metric"].concat(others.map(function (m) { return m + " - " + reference; })), block.metrics.map(function (m) {
          return [metricLabel(m)].concat(others.map(function (x) {
            var d = (block.diffs[x + "\u0000" + reference] || {})[m.name];
            return d ? {text: d[0] + " (" + d[2] + ")" + (d[1] ? " " + d[1] : ""), css: d[1]} : "n/a";
          }));
        })));
    }
    renderPareto(block, methods, paretoTable, plot);
  }

  function renderPareto(block, methods, paretoTable, plot) {
    var view = block.pareto[controls.pareto.value];
    if (!view) { paretoTable.textContent = "No Pareto view: these runs lack both axes' metrics."; return; }
    paretoTable.appendChild(table(view.title + " (front: no other method of this benchmark is better on both)",
      ["method", view.x, view.y, "on the front"], methods.map(function (m) {
        var p = view.points[m];
        return [m, p.x_text, p.y_text, p.front ? "yes" : "no"];
      })));
    if (typeof Plotly === "undefined") { plot.textContent = "Plot unavailable: plotly.min.js was not found."; return; }
    var shown = methods.filter(function (m) { return view.points[m].x !== null && view.points[m].y !== null; });
    Plotly.newPlot(plot, [{
      type: "scatter", mode: "markers+text", x: shown.map(function (m) { return view.points[m].x; }),
      y: shown.map(function (m) { return view.points[m].y; }), text: shown.map(function (m) {
        return m.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
      }), textposition: "top center",
      marker: {size: 11, symbol: shown.map(function (m) { return view.points[m].front ? "star" : "circle"; })}
    }], {title: {text: view.title}, xaxis: {title: {text: view.x}}, yaxis: {title: {text: view.y}}, height: 420,
         margin: {l: 64, r: 16, t: 40, b: 48}}, {displaylogo: false, responsive: true});
  }

  function chooseBlock(state) {
    var visible = visibleBlocks();
    fill(controls.block, visible.map(function (b) { return b.key; }), visible.map(function (b) {
      return b.suite + " (" + b.hash.slice(0, 8) + ") \u00b7 " + b.benchmark + " \u00b7 " + b.protocol_label;
    }), state.block, false);
    var block = currentBlock();
    if (!block) { return; }
    buildMethods(block, state.methods);
    var keys = Object.keys(block.pareto);
    fill(controls.pareto, keys, keys.map(function (k) { return block.pareto[k].title; }), state.pareto, false);
    fill(controls.reference, selectedMethods(), null, state.reference, false);
  }

  var state = readHash();
  fill(controls.family, distinct("family"), null, state.family, true);
  fill(controls.dataset, distinct("dataset"), null, state.dataset, true);
  fill(controls.protocol, distinct("protocol"), null, state.protocol, true);
  chooseBlock(state);
  render();

  form.addEventListener("change", function (event) {
    var target = event.target;
    if (target === controls.family || target === controls.dataset || target === controls.protocol) {
      chooseBlock({block: controls.block.value, methods: null});
    } else if (target === controls.block) {
      chooseBlock({block: controls.block.value, methods: null});
    }
    render();
  });
})();

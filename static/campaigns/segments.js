/* Segment rule builder: draws groups and conditions from the catalogue the server renders into the
 * page and keeps the form's JSON field ("definition") in step. Without this script the JSON field is
 * edited directly; the server validates either way. No build step, no dependencies. */
(function () {
  "use strict";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function init() {
    var source = document.getElementById("segment-catalogue");
    var textarea = document.querySelector("textarea[name=definition]");
    var root = document.getElementById("segment-builder");
    if (!source || !textarea || !root) return;
    var catalogue = JSON.parse(source.textContent);
    var L = catalogue.labels;
    var fields = {};
    catalogue.fields.forEach(function (f) { fields[f.name] = f; });

    var tree;
    try { tree = JSON.parse(textarea.value || "{}"); } catch (e) { return; /* leave the JSON to the server */ }
    if (!tree || typeof tree !== "object" || !Array.isArray(tree.items)) tree = { op: "all", items: [] };

    document.body.classList.add("segment-js");
    textarea.classList.add("segment-json-hidden");
    var toggle = el("button", { type: "button", className: "button segment-small segment-json-toggle", text: "JSON" });
    toggle.addEventListener("click", function () { textarea.classList.toggle("segment-json-hidden"); });
    textarea.parentNode.insertBefore(toggle, textarea);

    function sync() { textarea.value = JSON.stringify(tree); }

    // ---- value widgets ------------------------------------------------------------------------
    function numberInput(value, onChange, attrs) {
      var input = el("input", Object.assign({ type: "number", step: "any" }, attrs || {}));
      if (value !== undefined && value !== null) input.value = value;
      input.addEventListener("input", function () { onChange(input.value === "" ? null : Number(input.value)); });
      return input;
    }

    function multiSelect(choices, selected, onChange) {
      var select = el("select", { multiple: "multiple", "aria-label": L.value });
      var chosen = (selected || []).map(String);
      choices.forEach(function (c) {
        var option = el("option", { value: String(c[0]), text: c[1] });
        if (chosen.indexOf(String(c[0])) >= 0) option.selected = true;
        select.appendChild(option);
      });
      select.addEventListener("change", function () {
        onChange(Array.prototype.filter.call(select.options, function (o) { return o.selected; }).map(function (o) {
          var n = Number(o.value);
          return choices.length && typeof choices[0][0] === "number" && String(n) === o.value ? n : o.value;
        }));
      });
      return select;
    }

    function textList(values, onChange) {
      var input = el("input", { type: "text", className: "segment-text", placeholder: L.comma, "aria-label": L.value });
      input.value = (values || []).join(", ");
      input.addEventListener("input", function () {
        onChange(input.value.split(/[,，]/).map(function (s) { return s.trim(); }).filter(Boolean));
      });
      return input;
    }

    function pair(value, make) {
      var v = Array.isArray(value) ? value.slice() : [null, null];
      return [el("span", { text: L.from }), make(v[0], 0, v), el("span", { text: L.to }), make(v[1], 1, v)];
    }

    function daysInput(value, onChange, optional) {
      var wrap = el("span", { className: "segment-value" }, [el("span", { text: L.in_last })]);
      var input = numberInput(value, onChange, { min: "0", step: "1", "aria-label": L.days, placeholder: optional ? "∞" : "" });
      wrap.appendChild(input);
      wrap.appendChild(el("span", { text: L.days }));
      return wrap;
    }

    function valueWidget(cond) {
      var f = fields[cond.field];
      var op = cond.op;
      var box = el("span", { className: "segment-value" });
      function set(v) { cond.value = v; sync(); }
      var w = f.widget;
      if (w === "number") {
        if (op === "between") {
          pair(cond.value, function (x, i, arr) {
            return numberInput(x, function (n) { arr[i] = n; set(arr); }, { "aria-label": i ? L.to : L.from });
          }).forEach(function (n) { box.appendChild(n); });
        } else box.appendChild(numberInput(cond.value, set, { "aria-label": L.value }));
      } else if (w === "window") {
        var v = cond.value && typeof cond.value === "object" && !Array.isArray(cond.value) ? cond.value : { days: 90, value: null };
        cond.value = v;
        box.appendChild(daysInput(v.days, function (n) { v.days = n; set(v); }));
        if (op === "between") {
          pair(v.value, function (x, i, arr) {
            return numberInput(x, function (n) { arr[i] = n; v.value = arr; set(v); }, { "aria-label": i ? L.to : L.from });
          }).forEach(function (n) { box.appendChild(n); });
        } else box.appendChild(numberInput(v.value, function (n) { v.value = n; set(v); }, { "aria-label": L.value }));
      } else if (w === "bool") {
        var sel = el("select", { "aria-label": L.value }, [el("option", { value: "true", text: L.yes }), el("option", { value: "false", text: L.no })]);
        if (cond.value === false) sel.value = "false"; else cond.value = true;
        sel.addEventListener("change", function () { set(sel.value === "true"); });
        box.appendChild(sel);
      } else if (w === "date") {
        if (op === "in_last_days") box.appendChild(daysInput(cond.value, set));
        else if (op === "between") {
          pair(cond.value, function (x, i, arr) {
            var input = el("input", { type: "date", "aria-label": i ? L.to : L.from });
            if (x) input.value = x;
            input.addEventListener("input", function () { arr[i] = input.value; set(arr); });
            return input;
          }).forEach(function (n) { box.appendChild(n); });
        } else {
          var d = el("input", { type: "date", "aria-label": L.value });
          if (typeof cond.value === "string") d.value = cond.value;
          d.addEventListener("input", function () { set(d.value); });
          box.appendChild(d);
        }
      } else if (w === "birthday") {
        if (op === "in_month") box.appendChild(multiSelect(f.choices, Array.isArray(cond.value) ? cond.value : [], set));
        else {
          box.appendChild(numberInput(typeof cond.value === "number" ? cond.value : 7, set, { min: "0", max: "366", step: "1", "aria-label": L.days }));
          box.appendChild(el("span", { text: L.days }));
        }
      } else if (w === "choice") {
        var one = el("select", { "aria-label": L.value });
        f.choices.forEach(function (c) { one.appendChild(el("option", { value: String(c[0]), text: c[1] })); });
        if (cond.value) one.value = cond.value; else cond.value = one.value;
        one.addEventListener("change", function () { set(one.value); });
        box.appendChild(one);
      } else if (w === "days") {
        box.appendChild(numberInput(cond.value, set, { min: "0", step: "1", "aria-label": L.days }));
        box.appendChild(el("span", { text: L.days }));
      } else if (w === "multi") {
        box.appendChild(multiSelect(f.choices, Array.isArray(cond.value) ? cond.value : [], set));
      } else if (w === "tags") {
        box.appendChild(textList(Array.isArray(cond.value) ? cond.value : [], set));
      } else if (w === "purchase_text" || w === "purchase_multi") {
        var p = cond.value && typeof cond.value === "object" && !Array.isArray(cond.value) ? cond.value : { values: [], days: 90 };
        cond.value = p;
        box.appendChild(w === "purchase_text"
          ? textList(p.values, function (vals) { p.values = vals; set(p); })
          : multiSelect(f.choices, p.values, function (vals) { p.values = vals; set(p); }));
        box.appendChild(daysInput(p.days, function (n) { p.days = n; set(p); }, true));
      }
      if (f.help) box.appendChild(el("p", { className: "segment-help", text: f.help }));
      return box;
    }

    // ---- condition and group ------------------------------------------------------------------
    function fieldSelect(cond) {
      var select = el("select", { className: "segment-field", "aria-label": L.field });
      var groups = {};
      catalogue.fields.forEach(function (f) {
        if (!groups[f.group]) { groups[f.group] = el("optgroup", { label: f.group }); select.appendChild(groups[f.group]); }
        groups[f.group].appendChild(el("option", { value: f.name, text: f.label }));
      });
      select.value = cond.field;
      return select;
    }

    function renderCondition(cond, parent, index) {
      if (!fields[cond.field]) cond.field = catalogue.fields[0].name;
      var f = fields[cond.field];
      var ops = f.operators.map(function (o) { return o[0]; });
      if (ops.indexOf(cond.op) < 0) cond.op = ops[0];
      var row = el("div", { className: "segment-condition" });
      var fs = fieldSelect(cond);
      var os = el("select", { className: "segment-op", "aria-label": L.operator });
      f.operators.forEach(function (o) { os.appendChild(el("option", { value: o[0], text: o[1] })); });
      os.value = cond.op;
      fs.addEventListener("change", function () { cond.field = fs.value; cond.op = null; cond.value = null; redraw(); });
      os.addEventListener("change", function () {
        var wasBetween = cond.op === "between", isBetween = os.value === "between";
        cond.op = os.value;
        if (f.widget === "date" || f.widget === "birthday" || wasBetween !== isBetween) {
          if (f.widget === "window" && cond.value) cond.value.value = null; else if (f.widget !== "window") cond.value = null;
        }
        redraw();
      });
      var remove = el("button", { type: "button", className: "segment-small segment-remove", text: L.remove });
      remove.addEventListener("click", function () { parent.items.splice(index, 1); redraw(); });
      row.appendChild(fs);
      row.appendChild(os);
      row.appendChild(valueWidget(cond));
      row.appendChild(remove);
      return row;
    }

    function renderGroup(group, parent, index) {
      var box = el("div", { className: "segment-group" + (group.negate ? " negated" : "") });
      var match = el("select", { "aria-label": L.match }, [el("option", { value: "all", text: L.all }), el("option", { value: "any", text: L.any })]);
      match.value = group.op === "any" ? "any" : "all";
      match.addEventListener("change", function () { group.op = match.value; sync(); });
      var negate = el("input", { type: "checkbox" });
      negate.checked = !!group.negate;
      negate.addEventListener("change", function () {
        if (negate.checked) group.negate = true; else delete group.negate;
        box.classList.toggle("negated", negate.checked);
        sync();
      });
      var head = el("div", { className: "segment-group-head" }, [
        el("label", { text: L.match }),
        match,
        el("label", { className: "segment-negate" }, [negate, document.createTextNode(" " + L.negate)]),
      ]);
      if (parent) {
        var remove = el("button", { type: "button", className: "segment-small segment-remove", text: L.remove });
        remove.addEventListener("click", function () { parent.items.splice(index, 1); redraw(); });
        head.appendChild(remove);
      }
      box.appendChild(head);
      var items = el("div", { className: "segment-items" });
      if (!group.items.length) items.appendChild(el("p", { className: "segment-empty", text: L.empty }));
      group.items.forEach(function (item, i) {
        items.appendChild(Array.isArray(item.items) ? renderGroup(item, group, i) : renderCondition(item, group, i));
      });
      box.appendChild(items);
      var addCondition = el("button", { type: "button", className: "button segment-small segment-add-condition", text: L.add_condition });
      addCondition.addEventListener("click", function () {
        group.items.push({ field: catalogue.fields[0].name, op: null, value: null });
        redraw();
      });
      var addGroup = el("button", { type: "button", className: "button segment-small segment-add-group", text: L.add_group });
      addGroup.addEventListener("click", function () { group.items.push({ op: "any", items: [] }); redraw(); });
      box.appendChild(el("div", { className: "segment-group-foot" }, [addCondition, addGroup]));
      return box;
    }

    function redraw() {
      root.textContent = "";
      root.appendChild(renderGroup(tree, null, 0));
      sync();
    }

    redraw();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

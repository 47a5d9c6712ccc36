// Cairn dashboard: live job progress (server-sent events from /ui/events/jobs) and the file
// browser's "select all". The pages work without this file; only live updates need it.
(function () {
  "use strict";
  var FINAL = { succeeded: true, failed: true, cancelled: true };

  function each(sel, f) {
    Array.prototype.forEach.call(document.querySelectorAll(sel), f);
  }

  function update(j) {
    each('progress[data-job="' + j.id + '"]', function (p) {
      var pct = j.state === "succeeded" ? 100 : j.percent;
      p.value = pct;
      p.textContent = pct + "%";
      p.setAttribute("data-state", j.state);
    });
    each('[data-job-pct="' + j.id + '"]', function (s) {
      s.textContent = (j.state === "succeeded" ? 100 : j.percent) + "%";
    });
    each('[data-job-state="' + j.id + '"]', function (s) {
      s.textContent = j.state;
      s.className = "state " + j.state;
    });
    each('[data-job-phase="' + j.id + '"]', function (s) {
      s.textContent = j.phase;
    });
    each('[data-job-started="' + j.id + '"]', function (s) {
      s.textContent = j.started;
    });
    each('[data-job-finished="' + j.id + '"]', function (s) {
      s.textContent = j.finished;
    });
    each('[data-job-done="' + j.id + '"]', function (s) {
      s.textContent = j.files_done + " of " + j.files_total + " files";
    });
    if (j.log && j.log.length) {
      each('[data-job-log="' + j.id + '"]', function (l) {
        showLog(l, j);
      });
    }
    if (FINAL[j.state]) {
      each('[data-job-cancel="' + j.id + '"]', function (s) {
        s.hidden = true;
      });
    }
  }

  // Replaces a job's log list with the lines of the event (the same markup as the page's).
  function showLog(list, j) {
    while (list.firstChild) {
      list.removeChild(list.firstChild);
    }
    j.log.forEach(function (line, n) {
      if (n === 1 && j.log_dropped > 0) {
        var gap = document.createElement("li");
        gap.className = "muted";
        gap.textContent = "\u2026 " + j.log_dropped + " earlier line(s) dropped";
        list.appendChild(gap);
      }
      var li = document.createElement("li");
      li.className = line.level;
      var t = document.createElement("time");
      t.textContent = line.at;
      var lv = document.createElement("span");
      lv.className = "level";
      lv.textContent = line.level;
      var tx = document.createElement("span");
      tx.className = "text";
      tx.textContent = line.text;
      li.appendChild(t);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(lv);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(tx);
      list.appendChild(li);
    });
  }

  function live() {
    var ids = [];
    each("progress[data-job]", function (p) {
      var id = p.getAttribute("data-job");
      if (!FINAL[p.getAttribute("data-state")] && ids.indexOf(id) < 0) {
        ids.push(id);
      }
    });
    if (!ids.length || !window.EventSource) {
      return;
    }
    var es = new EventSource("/ui/events/jobs?ids=" + encodeURIComponent(ids.join(",")));
    es.addEventListener("job", function (ev) {
      try {
        update(JSON.parse(ev.data));
      } catch (e) {
        /* a malformed event is ignored */
      }
    });
    es.addEventListener("end", function () {
      es.close();
    });
  }

  function selectAll() {
    each("input[data-select-all]", function (box) {
      box.addEventListener("change", function () {
        each('input[type="checkbox"][name="path"]', function (c) {
          c.checked = box.checked;
        });
      });
    });
  }

  function start() {
    live();
    selectAll();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

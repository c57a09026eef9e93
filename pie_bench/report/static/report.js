(function () {
  function key(td) {
    if (!td) return null;
    var v = td.getAttribute('data-v');
    if (v === null) return td.textContent.trim().toLowerCase();
    if (v === '') return null;
    return parseFloat(v);
  }
  function sortTable(table, col, th) {
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('thead th').forEach(function (x) { x.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null && y === null) return 0;
      if (x === null) return 1;   /* undefined values last in both directions */
      if (y === null) return -1;
      var c = (typeof x === 'number' && typeof y === 'number') ? (x === y ? 0 : (x < y ? -1 : 1))
                                                               : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, i) {
      th.tabIndex = 0;
      th.title = (th.title ? th.title + ' - ' : '') + 'click to sort';
      th.addEventListener('click', function () { sortTable(table, i, th); });
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') sortTable(table, i, th); });
    });
  });
  var gallery = document.getElementById('gallery');
  if (!gallery) return;
  var fc = document.getElementById('filter-category'), fe = document.getElementById('filter-editor'),
      fs = document.getElementById('filter-status'), count = document.getElementById('gallery-count');
  function apply() {
    var cat = fc.value, ed = fe.value, st = fs.value, shown = 0, rows = gallery.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var ok = (cat === 'all' || r.getAttribute('data-category') === cat) &&
               (st === 'all' || (' ' + r.getAttribute('data-status') + ' ').indexOf(' ' + st + ' ') >= 0);
      r.style.display = ok ? '' : 'none';
      if (ok) shown++;
    }
    gallery.querySelectorAll('[data-editor]').forEach(function (c) {
      c.style.display = (ed === 'all' || c.getAttribute('data-editor') === ed) ? '' : 'none';
    });
    count.textContent = shown + ' of ' + rows.length + ' samples shown';
  }
  [fc, fe, fs].forEach(function (s) { s.addEventListener('change', apply); });
  apply();
})();

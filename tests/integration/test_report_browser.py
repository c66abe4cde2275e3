"""The report renders in a real browser: headless Chromium decodes every inline figure (an optional stage's
included), the verdict card is the first section, and folded JSON dumps stay closed until opened.

Fails (does not skip) when Chromium is missing under CI=true: `.ci/run` installs Debian's `chromium`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from agmask.files import write_json
from agmask.report import build_report
from agmask.targets import TARGETS
from reportkit import make_run_dir, png

CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var out = document.createElement('div');
  out.id = 'img-check';
  var folded = Array.prototype.slice.call(document.querySelectorAll('details table'));
  var visible = function (t) { return t.checkVisibility() && t.getBoundingClientRect().height > 0; };
  var hidden = folded.filter(function (t) { return !visible(t); }).length;
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  var shown = folded.filter(visible).length;
  out.textContent = 'images=' + imgs.length + ' broken=' + broken.length +
    ' widths=' + imgs.map(function (i) { return i.naturalWidth; }).join(',') +
    ' first=' + document.querySelector('section').id + ' folded=' + folded.length + ' hidden=' + hidden +
    ' shown=' + shown + ' card=' + document.querySelectorAll('#verdict table.targets tbody tr').length;
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing: .ci/run must install it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def test_every_figure_decodes_in_headless_chromium(tmp_path):
    browser = chromium()
    run = make_run_dir(tmp_path / "run")
    png(run / "tune" / "trials.png", "orange")  # an optional stage's section
    write_json(run / "tune" / "choice.json", {"trial": 3})
    page = build_report(run).read_text(encoding="utf-8")
    n_png = len(list(run.rglob("*.png")))
    probe = tmp_path / "probe.html"  # the test's copy of the page, with a checking script the report never has
    probe.write_text(page.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
           "--dump-dom", probe.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    match = re.search(r'<div id="img-check">images=(\d+) broken=(\d+) widths=([\d,]*) first=(\w+) folded=(\d+) '
                      r'hidden=(\d+) shown=(\d+) card=(\d+)</div>', result.stdout)
    assert match, f"no check result in the DOM (rc={result.returncode}): {result.stderr[-2000:]}"
    images, broken, widths = int(match[1]), int(match[2]), match[3].split(",")
    assert images == n_png == 9
    assert broken == 0 and all(int(w) > 0 for w in widths)
    assert match[4] == "verdict" and int(match[8]) == len(TARGETS)  # the card first, one row per target
    folded, hidden, shown = int(match[5]), int(match[6]), int(match[7])
    assert folded >= 4 and hidden == folded and shown == folded  # closed until opened

"""How fast the dashboard shows up on loopback, in Debian's Chromium driven by Playwright.

One ``hal0 serve`` (the built-in slots, none started) serves the page. Each run opens a fresh
browser context (an empty cache, as on a first visit) and measures, from the navigation's
start: the first contentful paint of the sign-in page; with the token already in the tab's
session (a reload after signing in), the moment all five slot cards are on the page, which
needs the modules, /api/status, /api/models, /api/models/pulls, /api/hardware/tier and the
event stream; and the bytes the page transferred (compressed). Medians over the runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.helpers.env import manifest
from tests.helpers.serve import serving, setup_home

FCP = "performance.getEntriesByName('first-contentful-paint')[0]?.startTime"
BYTES = ("[performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]"
         ".filter(e => !e.name.includes('/api/')).reduce((n, e) => n + e.transferSize, 0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        m = manifest()
        setup_home(home, m["llama_server"]["bin"], m["models"]["tiny-chat"])
        toml = home / "etc/slots/primary.toml"
        toml.write_text(re.sub(r"^enabled = true$", "enabled = false", toml.read_text(), flags=re.M))
        token = (home / "etc/admin.token").read_text().strip()
        with serving(home) as s, sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            fcp, ready, sizes = [], [], []
            for _ in range(args.runs):
                context = browser.new_context(bypass_csp=True)  # Playwright evaluates its waits as strings
                page = context.new_page()
                page.goto(s.url + "/")
                page.wait_for_function(f"{FCP} !== undefined")
                fcp.append(page.evaluate(FCP))
                sizes.append(page.evaluate(BYTES))
                page.evaluate("t => sessionStorage.setItem('hal0.token', t)", token)
                page.reload()
                page.wait_for_function("document.querySelectorAll('article.slot').length === 5")
                ready.append(page.evaluate("performance.now()"))
                context.close()
            browser.close()
            s.stop()
    print(f"{args.runs} runs, medians, Chromium {browser.version}")
    print(f"first contentful paint (sign-in page): {statistics.median(fcp):.0f} ms")
    print(f"signed in, five slot cards shown:      {statistics.median(ready):.0f} ms")
    print(f"page bytes transferred (compressed):   {statistics.median(sizes) / 1024:.1f} KB")


if __name__ == "__main__":
    main()

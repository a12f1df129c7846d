"""The live page in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser).

The service runs on the simulator; the test opens the page, waits for the
device rows, compares a shown value with the database's and today's consumption
with the rolled-up counter (after a real recompute), injects a fault and
sees that device turn to failing, checks that profile text full of markup is
shown as text, and that the console stayed clean. A screenshot of the fleet
and one of a device are saved in the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re

import pytest
from playwright.async_api import async_playwright, expect

from susee.storage_commands import rollup
from web_site import TOKEN, running_site

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000
HOSTILE = '<img src=x onerror="window.pwned=1">&<b>bold</b><script>window.pwned=2</script>'

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
async def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: apt-get install chromium (.ci/run does)", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def test_live_page_shows_the_database_values_and_a_fault_in_a_real_browser(tmp_path, browser):
    profile = tmp_path / "hostile.yaml"
    profile.write_text(
        "name: hostile\nfunction: 3\nbyte_order: big\nword_order: big\naddress_base: 0\nparams:\n"
        f"  - {{id: 133, address: 65, type: float32, unit: W, acronym: P_TOT, descr_eng: {json.dumps(HOSTILE)}, "
        f"descr_ita: {json.dumps(HOSTILE)}}}\n", encoding="utf-8")
    devices = [{"id": "d00", "unit": 1}, {"id": "d01", "unit": 2}, {"id": "odd:id.3", "unit": 3,
                                                                     "profile": "hostile.yaml"}]
    async with running_site(tmp_path, devices=devices, http={"token": TOKEN}) as site:
        context = await browser.new_context(http_credentials={"username": "energy", "password": TOKEN})
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type in ("error", "warning")
                else None)
        page.on("pageerror", lambda error: problems.append(str(error)))

        await page.goto(site.url)
        # Locators, not wait_for_function: the page's CSP forbids eval, Playwright's own world is exempt.
        await expect(page.locator("#fleet-rows tr")).to_have_count(3, timeout=WAIT_MS)
        await expect(page.locator("#fleet-rows tr td:nth-child(2)")).to_have_text(["good"] * 3, timeout=WAIT_MS)
        await page.screenshot(path=str(tmp_path / "fleet.png"), full_page=True)

        # The rollups of what is stored so far, by the real recompute (the service's upkeep is not running here).
        counter = "SELECT COUNT(*) FROM see000Raw WHERE idDevice = 'd00' AND idParam = '222' AND Code = 0"
        while not any(count >= 3 for count, in await asyncio.to_thread(site.query, counter)):  # [] until the tables exist
            await asyncio.sleep(0.2)
        assert await rollup(site.site, None, None) == 0

        # A device page: the shown value of P_TOT is the one stored for the shown date.
        await page.click("a[href='#device=d00']")
        await expect(page.locator("#last-source")).to_have_text("(from the database)", timeout=WAIT_MS)
        row = page.locator("#last-rows tr[data-param='133'] td")
        shown = await row.all_text_contents()
        stored = site.query("SELECT Value FROM see000Raw WHERE idDevice = 'd00' AND idParam = '133' AND Date LIKE ?",
                            (shown[7] + "%",))
        assert stored and float(shown[4]) == stored[0][0]
        assert shown[1:4] == ["P_TOT", "Active Power - Total", "Potenza attiva totale"]

        # Today's consumption of counter 222 (one band "all": no http.tariff) is the rolled-up counter's rise.
        total = page.locator("#consumption-totals tr[data-band='all'] td.energy")
        await expect(total).to_have_attribute("data-value", re.compile(r"^[0-9]"), timeout=WAIT_MS)
        rows = site.query("SELECT FirstValue, LastValue FROM see000Q15 WHERE idDevice = 'd00' AND idParam = '222' "
                          "AND Good > 0 ORDER BY Bucket")
        shown_wh = float(await total.get_attribute("data-value"))
        assert rows and shown_wh > 0 and shown_wh == pytest.approx(rows[-1][1] - rows[0][0], abs=0.002)
        assert await page.locator("#consumption svg.bars g").count() >= 1
        await page.screenshot(path=str(tmp_path / "consumption.png"), full_page=True)

        # Markup in a profile's descriptions is shown as text, never run or rendered.
        await page.goto(site.url + "#device=" + "odd%3Aid.3")
        # The header and the rows are replaced in one go: once it names the device, the rows are its own.
        await expect(page.locator("#device-id")).to_have_text("odd:id.3", timeout=WAIT_MS)
        texts = await page.locator("#last-rows tr[data-param='133'] td").all_text_contents()
        assert texts[2] == HOSTILE and texts[3] == HOSTILE
        assert await page.locator("#last-rows img, #last-rows b, #last-rows script").count() == 0
        await expect(page.locator("#consumption")).to_contain_text("no active-energy counter", timeout=WAIT_MS)
        await page.screenshot(path=str(tmp_path / "device.png"), full_page=True)

        # A fault in unit 2: d01 turns to failing, with the Code bit in words, without a reload.
        await page.goto(site.url + "#")
        await expect(page.locator("#fleet-rows tr")).to_have_count(3, timeout=WAIT_MS)
        site.simulator.set_fault(2, "illegal_address")
        await expect(page.locator("#fleet-rows tr[data-device='d01'] td:nth-child(2)")).to_have_text(
            "failing: err_register", timeout=WAIT_MS)
        await page.select_option("#status-filter", "failing")
        await expect(page.locator("#fleet-rows tr")).to_have_count(1, timeout=WAIT_MS)
        await page.screenshot(path=str(tmp_path / "failing.png"), full_page=True)
        assert (tmp_path / "fleet.png").stat().st_size > 0
        assert problems == [], problems
        await context.close()

// Loads the fos page in headless Chromium, uploads a real photo, draws a
// rectangle with the mouse, searches, opens a composite and saves a
// screenshot. Usage: node search.mjs URL PHOTO SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, photo, shot] = process.argv.slice(2);
if (!url || !photo || !shot) {
  console.error("usage: node search.mjs URL PHOTO SCREENSHOT.png");
  process.exit(2);
}
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(url) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) external.push(r.url()); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll("#category option").length > 0);
  await page.setInputFiles("#file", photo);
  await page.waitForFunction(() => !document.getElementById("go").disabled);
  // Draw a tall rectangle in the left-middle of the photo with the mouse.
  const c = await page.locator("#canvas").boundingBox();
  await page.mouse.move(c.x + c.width * 0.15, c.y + c.height * 0.30);
  await page.mouse.down();
  await page.mouse.move(c.x + c.width * 0.25, c.y + c.height * 0.55, { steps: 5 });
  await page.mouse.move(c.x + c.width * 0.32, c.y + c.height * 0.92, { steps: 5 });
  await page.mouse.up();
  const w = Number(await page.inputValue("#bw")), h = Number(await page.inputValue("#bh"));
  if (!(w > 20 && h > 40 && h > w)) fail(`the drawn rectangle is ${w}x${h}`);
  // Move it with the keyboard (arrows), as a keyboard user would.
  const x0 = Number(await page.inputValue("#bx"));
  await page.focus("#canvas");
  await page.keyboard.press("ArrowRight");
  if (Number(await page.inputValue("#bx")) !== x0 + 5) fail("ArrowRight did not move the rectangle");
  await page.selectOption("#category", "person");
  await page.click("#go");
  await page.waitForSelector("#results .card", { timeout: 60000 });
  const n = await page.locator("#results .card").count();
  if (n < 3) fail(`only ${n} results`);
  const groups = await page.locator("#patternlist .pattern").count();
  if (groups < 1) fail("no pattern groups");
  await page.waitForFunction(() => [...document.querySelectorAll("#results img")].every((i) => i.complete && i.naturalWidth > 0));
  await page.screenshot({ path: shot.replace(/\.png$/, "-results.png"), fullPage: true });
  await page.locator("#results .card").first().click();
  await page.waitForFunction(() => document.getElementById("dlg").open && document.getElementById("dlgimg").naturalWidth > 0, null, { timeout: 60000 });
  await page.screenshot({ path: shot, fullPage: false });
  if (errors.length) fail("page errors: " + errors.join("; "));
  if (external.length) fail("requests outside the server: " + external.join(", "));
  console.log(`ok: ${n} results, ${groups} pattern groups, composite shown; screenshots ${shot}`);
} finally {
  await browser.close();
}

#!/usr/bin/env python3
"""
test_webui.py - the built-in web chat in headless Chromium (Debian
`chromium` + `chromium-driver`, driven by selenium): sending and streaming,
conversations kept in localStorage across a reload, Markdown with
highlighted code and copy buttons, KaTeX math, DeepThink with collapsible
reasoning (V3.1 thinking mode), Stop (frees the server's slot),
regenerate / edit / copy, readable errors, token counts, HTML in model
output shown as text (no script runs), an API-key server, and graceful
degradation without the browser libraries.

    python3 tests/server/test_webui.py ./deepseek
"""
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import Checks, Server  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def browser():
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
              "--disable-extensions", "--no-first-run"):
        o.add_argument(a)
    o.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=o)


class UI:
    def __init__(self, d, srv):
        self.d, self.srv = d, srv

    def open(self):
        self.d.get(self.srv.url("/"))
        self.wait(lambda d: d.find_element(By.ID, "composer"))

    def wait(self, cond, timeout=20):
        return WebDriverWait(self.d, timeout, poll_frequency=0.05,
                             ignored_exceptions=[StaleElementReferenceException]).until(cond)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def settings(self, **kw):
        """Sets the settings form (opened) and saves."""
        self.js("document.getElementById('settings').open = true")
        ids = {"key": "set-key", "system": "set-system", "temp": "set-temp", "max": "set-max", "extra": "set-extra"}
        for k, v in kw.items():
            self.js("document.getElementById(arguments[0]).value = arguments[1]", ids[k], v)
        self.d.find_element(By.ID, "set-save").click()

    def send(self, text, wait=True):
        n = len(self.assistants())
        box = self.d.find_element(By.ID, "input")
        box.clear()
        box.send_keys(text)
        self.d.find_element(By.ID, "send").click()
        self.wait(lambda d: len(self.assistants()) == n + 1)
        if wait:
            self.wait_done()
        return self.assistants()[-1]

    def wait_done(self, timeout=30):
        self.wait(lambda d: self.assistants() and self.assistants()[-1].get_attribute("data-state") != "streaming", timeout)

    def assistants(self):
        return self.d.find_elements(By.CSS_SELECTOR, '#messages .msg[data-role="assistant"]')

    def users(self):
        return self.d.find_elements(By.CSS_SELECTOR, '#messages .msg[data-role="user"]')


def t_basic_chat(c, ui):
    ui.open()
    ui.wait(lambda d: d.find_element(By.ID, "model-name").text == "tiny-chat")
    ui.settings(max="12", extra="")
    m = ui.send("Hello there")
    c.eq(m.get_attribute("data-state"), "done", "reply finished")
    body = m.find_element(By.CSS_SELECTOR, ".body").text
    c.check(len(body) > 0, "reply has text")
    usage = m.find_element(By.CSS_SELECTOR, ".usage").text
    c.check("prompt" in usage and "completion tokens" in usage and "cached" in usage, f"token counts shown: {usage!r}")
    c.check("completion tokens" in ui.d.find_element(By.ID, "tokens").text, "token count in the composer")
    titles = [e.text for e in ui.d.find_elements(By.CSS_SELECTOR, "#conv-list li .title")]
    c.eq(titles, ["Hello there"], "conversation listed with its title")
    # a second turn in the same conversation
    ui.send("And again")
    c.eq(len(ui.users()), 2, "two user turns")
    stored = json.loads(ui.js("return localStorage.getItem('dsc.conversations')"))
    c.eq(len(stored), 1, "one conversation stored")
    c.eq([m["role"] for m in stored[0]["messages"]], ["user", "assistant", "user", "assistant"], "stored roles")
    # reload: the conversation is still there
    ui.open()
    ui.wait(lambda d: len(ui.users()) == 2)
    c.eq(ui.users()[0].find_element(By.CSS_SELECTOR, ".body").text, "Hello there", "restored after reload")
    # new chat, then switch back
    ui.d.find_element(By.ID, "new-chat").click()
    ui.wait(lambda d: len(ui.users()) == 0)
    ui.send("Second chat")
    items = ui.d.find_elements(By.CSS_SELECTOR, "#conv-list li")
    c.eq(len(items), 2, "two conversations")
    items[1].click()
    ui.wait(lambda d: len(ui.users()) == 2)
    c.eq([u.find_element(By.CSS_SELECTOR, ".body").text for u in ui.users()], ["Hello there", "And again"],
         "switched back: the first conversation's turns are shown")


MARKDOWN = ("Here is **bold** text and code:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\n"
            "Euler: $e^{i\\pi} + 1 = 0$ and $$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
            "<｜end▁of▁sentence｜>")


def t_markdown_code_math(c, ui):
    ui.settings(max="", extra=json.dumps({"x_forced_output": MARKDOWN}))
    m = ui.send("Show me markdown")
    body = m.find_element(By.CSS_SELECTOR, ".body")
    c.check(body.find_elements(By.TAG_NAME, "strong"), "bold rendered")
    codes = body.find_elements(By.CSS_SELECTOR, "pre > code")
    c.eq(len(codes), 1, "one code block")
    if codes:
        c.check("hljs" in (codes[0].get_attribute("class") or ""), f"code highlighted: {codes[0].get_attribute('class')!r}")
        c.check(codes[0].find_elements(By.CSS_SELECTOR, "span"), "highlight spans")
        btn = body.find_element(By.CSS_SELECTOR, "pre .copy-code")
        btn.click()
        ui.wait(lambda d: btn.text in ("Copied", "Copy failed"))
        c.eq(btn.text, "Copied", "code copy button")
    c.check(len(body.find_elements(By.CSS_SELECTOR, ".katex")) >= 2, "KaTeX rendered inline and display math")
    c.check(body.find_elements(By.TAG_NAME, "table"), "table rendered")
    # copy the whole message
    btn = m.find_element(By.CSS_SELECTOR, ".btn-copy")
    btn.click()
    ui.wait(lambda d: btn.text in ("Copied", "Copy failed"))
    c.eq(btn.text, "Copied", "message copy button")


def t_html_is_text(c, ui):
    evil = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>[x](javascript:window.pwned=3) done"
    ui.settings(extra=json.dumps({"x_forced_output": evil + "<｜end▁of▁sentence｜>"}))
    m = ui.send("be evil")
    body = m.find_element(By.CSS_SELECTOR, ".body")
    c.check(not body.find_elements(By.TAG_NAME, "img") and not body.find_elements(By.TAG_NAME, "script"), "no img/script element")
    c.check("<img" in body.text, f"the HTML is shown as text: {body.text!r}")
    for a in body.find_elements(By.TAG_NAME, "a"):
        c.check(not (a.get_attribute("href") or "").startswith("javascript"), "no javascript: link")
        a.click()
    time.sleep(0.2)
    c.check(ui.js("return window.pwned === undefined"), "no script ran")


def t_deepthink(c, ui):
    ui.settings(max="", extra=json.dumps({"x_forced_output": "Let me reason about it.</think>The **answer** is 42.<｜end▁of▁sentence｜>"}))
    ui.js("document.getElementById('deepthink').checked || document.getElementById('deepthink').click()")
    m = ui.send("Think hard")
    det = m.find_element(By.CSS_SELECTOR, "details.reasoning")
    c.eq(det.find_element(By.CSS_SELECTOR, ".reasoning-body").get_attribute("textContent"), "Let me reason about it.",
         "reasoning shown separately")
    c.eq(m.find_element(By.CSS_SELECTOR, ".body").text, "The answer is 42.", "answer without the reasoning")
    c.check("reasoning" in m.find_element(By.CSS_SELECTOR, ".usage").text, "reasoning tokens counted")
    was = det.get_attribute("open")
    det.find_element(By.TAG_NAME, "summary").click()
    c.check(det.get_attribute("open") != was, "reasoning collapses / expands")
    # the real thing: thinking mode with random weights streams reasoning_content
    ui.settings(extra=json.dumps({"max_tokens": 15}))
    m = ui.send("think freely")
    c.check(len(m.find_element(By.CSS_SELECTOR, ".reasoning-body").get_attribute("textContent")) > 0,
            "V3.1 thinking mode streams reasoning")
    ui.js("document.getElementById('deepthink').checked && document.getElementById('deepthink').click()")
    m = ui.send("no thinking now")
    c.check(not m.find_elements(By.CSS_SELECTOR, "details.reasoning"), "DeepThink off: no reasoning block")


def t_stop_regenerate_edit(c, ui):
    ui.settings(max="400", extra=json.dumps({"x_token_delay_ms": 30, "ignore_eos": True}))
    m = ui.send("long answer please", wait=False)
    ui.wait(lambda d: len(ui.assistants()[-1].find_element(By.CSS_SELECTOR, ".body").text) > 5)
    c.check(ui.d.find_element(By.ID, "stop").is_displayed(), "Stop visible while streaming")
    ui.d.find_element(By.ID, "stop").click()
    ui.wait_done()
    m = ui.assistants()[-1]
    c.eq(m.get_attribute("data-state"), "stopped", "stopped")
    c.check(not ui.d.find_element(By.ID, "stop").is_displayed(), "Stop hidden again")
    busy = None
    for _ in range(100):
        busy = ui.srv.metrics().get("deepseek_slots_busy")
        if busy == 0:
            break
        time.sleep(0.02)
    c.eq(busy, 0, "Stop freed the server's slot")
    # regenerate replaces the last answer
    ui.settings(max="", extra=json.dumps({"x_forced_output": "Regenerated!<｜end▁of▁sentence｜>"}))
    n = len(ui.assistants())
    ui.assistants()[-1].find_element(By.CSS_SELECTOR, ".btn-regen").click()
    ui.wait(lambda d: ui.assistants()[-1].find_element(By.CSS_SELECTOR, ".body").text == "Regenerated!")
    ui.wait_done()
    c.eq(len(ui.assistants()), n, "regenerate keeps the number of turns")
    # edit the first user message: the conversation is cut there and answered again
    ui.settings(extra=json.dumps({"x_forced_output": "Edited answer.<｜end▁of▁sentence｜>"}))
    first = ui.users()[0]
    first.find_element(By.CSS_SELECTOR, ".btn-edit").click()
    box = ui.wait(lambda d: d.find_element(By.CSS_SELECTOR, ".edit-box"))
    box.clear()
    box.send_keys("An edited question")
    ui.d.find_element(By.CSS_SELECTOR, ".btn-save").click()
    ui.wait(lambda d: len(ui.users()) == 1 and ui.assistants()[-1].find_element(By.CSS_SELECTOR, ".body").text == "Edited answer.")
    ui.wait_done()
    c.eq(ui.users()[0].find_element(By.CSS_SELECTOR, ".body").text, "An edited question", "edited text kept")


def t_errors(c, ui):
    ui.settings(max="999999", extra="")
    m = ui.send("this will fail")
    c.eq(m.get_attribute("data-state"), "error", "error state")
    err = ui.d.find_element(By.ID, "error")
    c.check(err.is_displayed() and "HTTP 400" in err.text and "max_tokens" in err.text, f"readable error: {err.text!r}")
    c.check("max_tokens" in m.find_element(By.CSS_SELECTOR, ".err").text, "error shown in the message")
    ui.settings(max="", extra="{not json")
    c.check("not valid JSON" in ui.d.find_element(By.ID, "error").text, "bad settings JSON explained")
    ui.settings(extra="")


def t_api_key(c, d, binary):
    with Server(binary, "--api-key", "sk-web") as srv:
        ui = UI(d, srv)
        ui.open()
        ui.wait(lambda dd: "API key" in dd.find_element(By.ID, "error").text)
        c.check(True, "asks for the API key")
        ui.settings(key="sk-web", max="5")
        ui.wait(lambda dd: dd.find_element(By.ID, "model-name").text == "tiny-chat")
        m = ui.send("with a key")
        c.eq(m.get_attribute("data-state"), "done", "works with the key")
        ui.settings(key="")


def t_no_libraries(c, d, binary):
    with Server(binary, "--js-dir", "/nonexistent") as srv:
        ui = UI(d, srv)
        ui.open()
        ui.settings(extra=json.dumps({"x_forced_output": "Plain **bold** and\n```\ncode <b>x</b>\n```\n<｜end▁of▁sentence｜>"}))
        m = ui.send("no libs")
        body = m.find_element(By.CSS_SELECTOR, ".body")
        c.check(ui.js("return window.marked === undefined && window.hljs === undefined"), "libraries absent")
        c.check(body.find_elements(By.CSS_SELECTOR, "pre > code"), "fallback renders code blocks")
        c.check("code <b>x</b>" in body.text, "fallback escapes HTML")
        c.check(body.find_elements(By.TAG_NAME, "strong"), "fallback renders bold")
        ui.settings(extra="")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "./deepseek"
    c = Checks("webui")
    d = browser()
    try:
        with Server(binary, "--chat-format", "v3.1", "--parallel", "2") as srv:
            ui = UI(d, srv)
            for fn in (t_basic_chat, t_markdown_code_math, t_html_is_text, t_deepthink, t_stop_regenerate_edit, t_errors):
                c.run(fn, ui)
            errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]
                      and "the server responded with a status of 400" not in e["message"]]
            c.check(not errors, f"no browser errors: {errors}")
        d.delete_all_cookies()
        d.get("about:blank")
        c.run(t_api_key, d, binary)
        c.run(t_no_libraries, d, binary)
    finally:
        d.quit()
    c.finish()


if __name__ == "__main__":
    main()

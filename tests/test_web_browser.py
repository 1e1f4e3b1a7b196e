"""The operator page in a real headless Chromium: logging in, the live view of sessions and expiries, STOP ALL and
the drive pad against the pigpiod emulator (the real pigpio client on the daemon's side, pins read from the
emulator), what happens when the tab goes away, and a phone-sized screenshot for the README."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rover_safety.daemon.app import Daemon
from rover_safety.web import OperatorPage
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.support import browser as chromium
from tests.support.browser import Browser, with_page
from tests.support.daemons import DaemonFactory, example_config
from tests.support.grpc_client import Client, Heartbeats
from tests.support.keys import new_certificate, new_key, secured
from tests.support.logs import captured
from tests.support.pigpiod_emulator import Cmd, EmulatorClient
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(chromium.missing() is not None, reason=chromium.missing() or "")

# The screenshot goes to build/; `UPDATE_SCREENSHOT=1` puts it in docs/ for the README (a test run leaves the
# checkout as it was).
CHECKOUT = Path(__file__).resolve().parent.parent
SCREENSHOT = CHECKOUT / ("docs" if os.environ.get("UPDATE_SCREENSHOT") else "build") / "operator-page.png"
WINDOW = 1.0  # seconds: the heartbeat window of these daemons (the page heartbeats every 0.2 s)
LEFT = (17, 27, 22)  # a, b, pwm
RIGHT = (26, 19)  # dir, pwm
LEFT_PWM, RIGHT_PWM = 22, 19


def page_of(daemon: Daemon) -> OperatorPage:
    assert daemon.page is not None
    return daemon.page


def url(daemon: Daemon, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{page_of(daemon).port}/"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorClient]:
    with EmulatorClient.spawn() as emulator:
        yield emulator


@pytest.fixture
def rover(make_daemon: DaemonFactory, emulator: EmulatorClient) -> Daemon:
    """A daemon on the emulated pigpiod with the page on loopback, no API keys."""
    return make_daemon(with_page(example_config("1s", "pigpio", host="127.0.0.1", port=emulator.port)))


@pytest.fixture(scope="module")
def chrome() -> Iterator[Browser]:
    """One Chromium for the module (it takes a second to start); each test gets a fresh tab of it."""
    with chromium.browser(insecure_certificates=True) as b:  # the daemon's self-signed certificate
        yield b


@pytest.fixture
def tab(chrome: Browser) -> Browser:
    chrome.fresh_tab()
    return chrome


def off(emulator: EmulatorClient) -> bool:
    """Every output of both motors off at the emulator: PWM duty 0, direction pins low."""
    pins = {p.gpio: p for p in emulator.pins()}
    return all(pins[g].duty == 0 for g in (LEFT_PWM, RIGHT_PWM)) and all(pins[g].level == 0 for g in (17, 27, 26))


def forward(emulator: EmulatorClient) -> bool:
    """Both motors driven forward at the emulator (PWM running on both)."""
    return emulator.pin(LEFT_PWM).duty > 0 and emulator.pin(RIGHT_PWM).duty > 0


def first_cut(emulator: EmulatorClient, since: float) -> float:
    """When (time.monotonic(), as the emulator logged it) the left PWM first went to duty 0 after `since`."""
    cuts = [c.t for c in emulator.log(since) if c.cmd == Cmd.PWM and c.p1 == LEFT_PWM and c.p2 == 0]
    assert cuts, "the left PWM was never set to 0"
    return min(cuts)


def open_live(tab: Browser, daemon: Daemon) -> None:
    tab.open(url(daemon))
    tab.live()


# --- the live view ---------------------------------------------------------------------------------------------


def test_a_session_appears_and_its_expiry_shows(make_daemon: DaemonFactory, tab: Browser) -> None:
    """Another client's session shows up with its owner and peer, and when it lapses it leaves the list and joins
    the last expiries, with what was stopped."""
    daemon = make_daemon(with_page(example_config("1s")))
    open_live(tab, daemon)
    assert tab.session_tags() == []
    other = Client(daemon.port)
    other.start()
    other.set_power("left", 0.5)
    (session,) = daemon.sessions.all()
    tab.wait(lambda: tab.session_tags() == [session.tag], what="the new session")
    card = f"#sessions li[data-tag='{session.tag}']"
    tab.wait(lambda: "drives left" in tab.text(card), what="the session shown driving left")
    assert "owner 127.0.0.1" in tab.text(card) and session.peer in tab.text(card)
    tab.wait(lambda: tab.resource_moving("left"), what="left shown moving")
    tab.wait(lambda: tab.session_tags() == [], timeout=WINDOW + 2, what="the session to go at its window")
    tab.wait(lambda: session.tag in tab.expiry_tags(), what="the expiry")
    expiry = tab.text(f"#expiries li[data-tag='{session.tag}']")
    assert "expired" in expiry and "stopped left" in expiry and "after the deadline" in expiry
    tab.wait(lambda: not tab.resource_moving("left"), what="left shown stopped")  # "stopped" comes after "expired"
    assert tab.text("#gpio") == "GPIO mock up"
    other.close()


def test_log_in_over_https(make_daemon: DaemonFactory, tab: Browser, tmp_path: Path) -> None:
    """With API keys: the login form first (STOP ALL works before it with public_stop), a wrong key is refused
    with the daemon's reason, the right one opens the live view; logging out closes it."""
    certificate = new_certificate(tmp_path / "tls")
    key = new_key("phone")
    daemon = make_daemon(with_page(secured(example_config("2s"), certificate, (key,),
                                           extra_auth="  public_stop: true\n")))
    tab.open(url(daemon, "https"))
    tab.wait(lambda: tab.shown("#login-form"), what="the login form")
    assert not tab.shown("#live") and "works before login" in tab.text("#stop-note")
    with captured() as logs:
        tab.element("#stop-all").click()
        tab.wait(lambda: tab.text("#stop-all") == "STOPPED", what="STOP ALL before login")
    assert any(m.startswith("StopAll from ipv4:127.0.0.1:") for m in logs.messages())
    tab.element("#key-id").send_keys("phone")
    tab.element("#key").send_keys("not the key")
    tab.element("#login-button").click()
    tab.wait(lambda: "invalid credentials" in tab.text("#login-error"), what="the refusal")
    key_field = tab.element("#key")
    key_field.clear()
    key_field.send_keys(key.key)
    tab.element("#login-button").click()
    tab.live()
    assert tab.text("#who") == "key phone"
    tab.element("#logout").click()
    tab.wait(lambda: tab.shown("#login-form") and not tab.shown("#live"), what="logged out")
    assert page_of(daemon).visits.logins == 0


# --- STOP ALL and the drive pad, at the emulated pins -------------------------------------------------------------


def test_stop_all_turns_the_pins_off(rover: Daemon, emulator: EmulatorClient, tab: Browser) -> None:
    other = Client(rover.port)
    window = other.start_session()
    beats = Heartbeats(other, window / 5)
    try:
        other.set_power("left", 0.7)
        assert emulator.wait_for(lambda: emulator.pin(LEFT_PWM).duty > 0, 2)
        open_live(tab, rover)
        tab.wait(lambda: tab.resource_moving("left"), what="left shown moving")
        tab.element("#stop-all").click()
        assert emulator.wait_for(lambda: off(emulator), 2), "STOP ALL left pins on"
        tab.wait(lambda: not tab.resource_moving("left"), what="left shown stopped")
        assert len(rover.sessions.all()) == 1  # StopAll stops; it ends no session
    finally:
        beats.stop()
        other.close()
    assert not beats.errors


def test_the_drive_pad_drives_while_held(rover: Daemon, emulator: EmulatorClient, tab: Browser) -> None:
    """Pins on while an arrow (or W) is held, off on release and when the window loses focus; the session is the
    page's own and heartbeats come from the browser."""
    open_live(tab, rover)
    hold = tab.hold("up")
    assert emulator.wait_for(lambda: forward(emulator), 2), "holding the arrow did not drive"
    tab.wait(lambda: tab.resource_moving("base"), what="the base shown moving")
    assert tab.drive_session()
    time.sleep(2 * WINDOW)  # held for two windows: the browser's heartbeats keep it going
    assert forward(emulator) and page_of(rover).heartbeats >= 6
    tab.let_go(hold)
    assert emulator.wait_for(lambda: off(emulator), 1), "releasing the arrow did not stop"

    keys = ActionChains(tab.driver)
    keys.key_down("w").perform()
    assert emulator.wait_for(lambda: forward(emulator), 2), "W did not drive"
    keys.key_down("a").perform()  # forward and turning left: the left wheel slower than the right
    assert emulator.wait_for(lambda: emulator.pin(LEFT_PWM).duty < emulator.pin(RIGHT_PWM).duty, 2)
    keys.key_up("a").key_up("w").perform()
    assert emulator.wait_for(lambda: off(emulator), 1), "letting go of the keys did not stop"

    keys.key_down(Keys.ARROW_DOWN).perform()
    assert emulator.wait_for(lambda: emulator.pin(LEFT_PWM).duty > 0 and emulator.pin(27).level == 1, 2)
    tab.driver.switch_to.new_window("tab")  # the page's window loses focus, its tab is hidden
    assert emulator.wait_for(lambda: off(emulator), 1), "losing focus did not stop"
    wait_until(lambda: not rover.sessions.all(), timeout=WINDOW / 2, what="the hidden page to close its session")


def test_closing_the_tab_stops_the_base_at_once(rover: Daemon, emulator: EmulatorClient, tab: Browser) -> None:
    """A closing tab still says goodbye (pagehide): its Stop and CloseSession go out (keepalive), so the base stops
    at once rather than at the end of the window."""
    spare = tab.spare_tab()
    open_live(tab, rover)
    tab.hold("up")
    assert emulator.wait_for(lambda: forward(emulator), 2)
    closed = time.monotonic()
    tab.driver.close()
    tab.driver.switch_to.window(spare)
    assert emulator.wait_for(lambda: off(emulator), 1), "closing the tab left the base running"
    assert first_cut(emulator, closed) - closed < WINDOW / 2
    wait_until(lambda: not rover.sessions.all(), timeout=WINDOW / 2, what="the closing tab's CloseSession")


@pytest.mark.parametrize("how", ["crash", "offline"])
def test_a_tab_that_cannot_say_goodbye_stops_the_base_at_the_window(
        rover: Daemon, emulator: EmulatorClient, tab: Browser, how: str) -> None:
    """The tab dies (its renderer crashes: the browser killed, the phone's battery gone) or its network does,
    while an arrow is held: no more heartbeats reach the daemon, and the base stops at the window after the last
    one, not before (the page's server side sends none of its own) and not much after."""
    spare = tab.spare_tab()
    open_live(tab, rover)
    tab.hold("up")
    assert emulator.wait_for(lambda: forward(emulator), 2)
    time.sleep(WINDOW / 2)
    page = page_of(rover)
    gone = time.monotonic()
    if how == "crash":
        tab.crash_tab()
    else:
        tab.offline()
    tab.driver.switch_to.window(spare)  # nothing the test does may touch the dead tab again
    assert emulator.wait_for(lambda: off(emulator), WINDOW + 1), "the base kept running"
    cut = first_cut(emulator, gone)
    last_heartbeat = page.last_heartbeat
    assert page.heartbeats > 0 and last_heartbeat < cut
    late = cut - (last_heartbeat + WINDOW)
    assert 0 <= late < 0.1, f"cut {late * 1000:+.1f} ms from the window after the last heartbeat"
    assert len(rover.sessions.all()) == 0


# --- for the README ------------------------------------------------------------------------------------------------


def test_phone_screenshot(make_daemon: DaemonFactory, tab: Browser) -> None:
    """The README's picture (docs/operator-page.png): the page on a 390x844 phone while a client drives a motor and
    another's session has just lapsed."""
    daemon = make_daemon(with_page(example_config("1s")))
    lapsed = Client(daemon.port)
    lapsed.start()
    lapsed.set_power("right", -0.4)
    driver = Client(daemon.port)
    beats = Heartbeats(driver, driver.start_session() / 5)
    try:
        driver.set_power("left", 0.6)
        tab.phone()
        open_live(tab, daemon)
        tab.wait(lambda: len(tab.expiry_tags()) == 1 and len(tab.session_tags()) == 1, timeout=WINDOW + 3,
                 what="one session live and one expired")
        tab.wait(lambda: tab.resource_moving("left"), what="left shown moving")
        width, height = tab.js("return [window.innerWidth, window.innerHeight]")
        assert (width, height) == (390, 844)
        top = tab.element("#stop-all").rect
        assert top["height"] >= 88 and top["width"] >= 340  # a thumb's worth, at the top
        for arrow in tab.driver.find_elements(By.CSS_SELECTOR, "#pad .dir"):
            assert arrow.size["height"] >= 72 and arrow.size["width"] >= 72
        SCREENSHOT.parent.mkdir(exist_ok=True)
        tab.screenshot(SCREENSHOT)
    finally:
        beats.stop()
        driver.close()
        lapsed.close()
    assert SCREENSHOT.stat().st_size > 20_000

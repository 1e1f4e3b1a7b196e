"""The operator page's server side, over plain HTTP (no browser): a client of the daemon's gRPC port that forwards
each browser's token and address, never heartbeats on its own, keeps tokens in a bounded cookie table, refuses
state-changing requests without the page's CSRF token, and obeys the open-door rule."""

from __future__ import annotations

import logging
import re
import ssl
import time
from pathlib import Path

import pytest
from rover_safety.daemon.app import Daemon
from rover_safety.daemon.errors import StartupError
from rover_safety.web import OperatorPage
from rover_safety.web.upstream import certificate_name, grpc_peer, upstream_target
from rover_safety.web.visits import Visits

from tests.support.browser import WebClient, with_page
from tests.support.daemons import DaemonFactory, duty, example_config
from tests.support.grpc_client import Client
from tests.support.keys import Certificate, Key, new_certificate, new_key, secured
from tests.support.logs import captured, field
from tests.support.waiting import wait_until

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
LEFT_PWM = 22


def page_of(daemon: Daemon) -> OperatorPage:
    assert daemon.page is not None, "the page is not on"
    return daemon.page


def client(daemon: Daemon, source: str = "127.0.0.1") -> WebClient:
    web = WebClient(page_of(daemon).port, source=source)
    web.state()
    return web


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return new_certificate(tmp_path / "tls")


@pytest.fixture
def key() -> Key:
    return new_key("phone")


def tls_client(daemon: Daemon, certificate: Certificate, source: str = "127.0.0.1") -> WebClient:
    context = ssl.create_default_context(cafile=str(certificate.cert))
    web = WebClient(page_of(daemon).port, source=source, tls=context)
    web.state()
    return web


# --- what the page is made of ----------------------------------------------------------------------------------


def test_off_unless_configured(make_daemon: DaemonFactory) -> None:
    assert make_daemon().page is None


def test_everything_it_needs_ships_with_it(make_daemon: DaemonFactory) -> None:
    """The page, its script, style and icon come from the package, with a policy that loads nothing else."""
    web = client(make_daemon(with_page(example_config())))
    index = web.request("GET", "/")
    assert index.status == 200 and b"STOP ALL" in index.body
    policy = index.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert index.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("app.js", "app.css", "icon.svg"):
        reply = web.request("GET", f"/static/{name}")
        assert reply.status == 200, name
        assert reply.body == (STATIC / name).read_bytes()
    for path in STATIC.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text)) - {"http://www.w3.org"}
        assert not urls, f"{path.name} refers to {urls}"
    assert web.request("GET", "/static/../daemon/app.py").status in (403, 404)


def test_the_cookie_is_httponly_secure_strict(make_daemon: DaemonFactory) -> None:
    web = WebClient(page_of(make_daemon(with_page(example_config()))).port)
    reply = web.request("GET", "/api/state")
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith("__Host-rover-safety=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags
    assert not any(flag.startswith("domain") for flag in flags)
    assert reply.json() == {"csrf": web.csrf or reply.json()["csrf"], "auth_required": False, "logged_in": False,
                            "key_id": "", "public_stop": False}


def test_state_changing_requests_need_the_pages_csrf_token(make_daemon: DaemonFactory) -> None:
    """A cross-site form, a fetch from another origin, a request without the cookie or the header: 403 (or 415),
    and nothing stops; the page's own request stops everything."""
    daemon = make_daemon(with_page(example_config("5s")))
    driver = Client(daemon.port)
    driver.start()
    driver.set_power("left", 0.6)
    web = client(daemon)
    assert web.post("/api/stop_all", csrf="").status == 403
    assert web.post("/api/stop_all", csrf="x" * 43).status == 403
    assert web.post("/api/stop_all", content_type="application/x-www-form-urlencoded").status == 415
    assert web.post("/api/stop_all", headers={"Origin": "https://evil.example"}).status == 403
    stranger = WebClient(web.port, csrf=web.csrf)  # the token without the cookie
    assert stranger.post("/api/stop_all").status == 403
    assert duty(daemon, LEFT_PWM) == pytest.approx(0.6)
    assert web.post("/api/stop_all", headers={"Origin": f"http://127.0.0.1:{web.port}"}).status == 200
    assert duty(daemon, LEFT_PWM) == 0
    driver.close()


def test_on_loopback_only_loopback_names_are_answered(make_daemon: DaemonFactory) -> None:
    """A site that rebinds its name to 127.0.0.1 gets nothing: on loopback the page answers only loopback names."""
    web = client(make_daemon(with_page(example_config())))
    assert web.request("GET", "/", headers={"Host": "evil.example:8081"}).status == 403
    assert web.request("GET", "/api/state", headers={"Host": "rebind.evil.example"}).status == 403
    for host in ("localhost:1", "127.0.0.1", "[::1]:8081", "127.1.2.3:80"):
        assert web.request("GET", "/api/state", headers={"Host": host}).status == 200, host


# --- a client of the wire: the browser's address, the daemon's sessions and heartbeats ---------------------------


def test_the_daemon_sees_the_browsers_address(make_daemon: DaemonFactory) -> None:
    """Sessions started through the page belong to the browser's host and show its address (with no API keys the
    owner is the host): two browsers on two machines are two clients to the daemon, not 127.0.0.1."""
    daemon = make_daemon(with_page(example_config("5s")))
    first, second = client(daemon, "127.0.0.2"), client(daemon, "127.0.0.3")
    one = first.post("/api/sessions").json()["id"]
    two = second.post("/api/sessions").json()["id"]
    sessions = {s.id: s for s in daemon.sessions.all()}
    assert sessions[one].owner == "127.0.0.2" and sessions[one].peer.startswith("ipv4:127.0.0.2:")
    assert sessions[two].owner == "127.0.0.3" and sessions[two].peer.startswith("ipv4:127.0.0.3:")
    # a session id is useless from another machine, through the page as anywhere
    assert second.post("/api/sessions/heartbeat", {"id": one}).json()["code"] == "SESSION_EXPIRED"
    assert first.post("/api/sessions/heartbeat", {"id": one}).status == 200
    with captured() as logs:
        assert first.post("/api/stop_all").status == 200
    assert any("StopAll from ipv4:127.0.0.2:" in m for m in logs.messages())


def test_a_forged_address_is_ignored(make_daemon: DaemonFactory) -> None:
    """Without the page's secret, the address a client claims is not believed."""
    import grpc
    from rover_safety.api import robot_pb2, robot_pb2_grpc

    daemon = make_daemon(with_page(example_config("5s")))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        robot = robot_pb2_grpc.RobotServiceStub(channel)
        reply = robot.StartSession(robot_pb2.StartSessionRequest(), timeout=5, metadata=(
            ("x-rover-safety-peer", "ipv4:10.9.9.9:1"), ("x-rover-safety-proxy", "guess")))
    (session,) = [s for s in daemon.sessions.all() if s.id == reply.id]
    assert session.owner == "127.0.0.1"


def test_the_page_never_heartbeats_on_its_own(make_daemon: DaemonFactory) -> None:
    """A drive session started through the page lapses at its window unless the browser sends heartbeats, even with
    the page's event stream open; what it drove stops then."""
    daemon = make_daemon(with_page(example_config("500ms")))
    web = client(daemon)
    with web.events() as stream:
        assert stream.status == 200
        started = time.monotonic()
        sid = web.post("/api/sessions").json()["id"]
        assert web.post("/api/bases/base/power", {"session": sid, "linear": 0.5, "angular": 0}).status == 200
        assert duty(daemon, LEFT_PWM) > 0
        wait_until(lambda: duty(daemon, LEFT_PWM) == 0, timeout=2, what="the base to stop at the window")
        lapsed = time.monotonic() - started
        stream.until(lambda name, data: data["kind"] == "expired")
    assert 0.45 <= lapsed <= 0.9, lapsed
    assert page_of(daemon).heartbeats == 0
    assert web.post("/api/sessions/heartbeat", {"id": sid}).json()["code"] == "SESSION_EXPIRED"


def test_the_browsers_heartbeats_keep_its_session(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(with_page(example_config("500ms")))
    web = client(daemon, "127.0.0.2")
    sid = web.post("/api/sessions").json()["id"]
    assert web.post("/api/bases/base/power", {"session": sid, "linear": 0.4, "angular": 0.2}).status == 200
    for _ in range(15):  # 1.5 s, three windows
        time.sleep(0.1)
        assert web.post("/api/sessions/heartbeat", {"id": sid}).status == 200
    assert duty(daemon, LEFT_PWM) > 0
    assert page_of(daemon).heartbeats == 15
    assert web.post("/api/sessions/close", {"id": sid}).json() == {"success": True}
    assert duty(daemon, LEFT_PWM) == 0


def test_a_reload_keeps_the_pages_clients_apart(make_daemon: DaemonFactory) -> None:
    """The page's secret survives a reload: a browser's session still belongs to its host afterwards."""
    daemon = make_daemon(with_page(example_config("5s")))
    web = client(daemon, "127.0.0.2")
    sid = web.post("/api/sessions").json()["id"]
    assert daemon.reload()
    assert web.post("/api/sessions/heartbeat", {"id": sid}).status == 200


def test_refusals_come_back_as_the_daemons(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(with_page(example_config("5s")))
    web = client(daemon)
    reply = web.post("/api/bases/base/power", {"session": "no-such-session", "linear": 0.5, "angular": 0})
    assert (reply.status, reply.json()["code"]) == (409, "SESSION_EXPIRED")
    sid = web.post("/api/sessions").json()["id"]
    reply = web.post("/api/bases/nope/power", {"session": sid, "linear": 0.5, "angular": 0})
    assert (reply.status, reply.json()["code"]) == (404, "NOT_FOUND")
    assert web.post("/api/bases/base/power", {"session": sid, "linear": "fast", "angular": 0}).status == 400
    assert web.post("/api/sessions/heartbeat", {"id": 7}).status == 400
    assert web.request("POST", "/api/stop_all", b"{" * 20000,
                       {"Content-Type": "application/json", "X-CSRF-Token": web.csrf}).status == 413


def test_the_event_stream_relays_watch_events(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(with_page(example_config("5s")))
    web = client(daemon)
    with web.events() as stream:
        assert stream.status == 200
        name, first = stream.next()
        assert (name, first["kind"]) == ("message", "snapshot")
        assert {r["name"] for r in first["status"]["resources"]} == {"left", "right", "base"}
        assert first["status"]["gpio_up"] is True
        other = Client(daemon.port)
        other.start()
        started = stream.until(lambda name, data: data["kind"] == "started")
        assert started["session_tag"] and started["peer"].startswith("ipv4:127.0.0.1:")
        status = stream.until(lambda name, data: "status" in data and data["status"]["sessions"])["status"]
        assert "id" not in status["sessions"][0]  # ids are secrets, even one's own
        other.close()


def test_event_streams_are_bounded_per_browser(make_daemon: DaemonFactory) -> None:
    daemon = make_daemon(with_page(example_config()))
    web = client(daemon)
    with web.events() as a, web.events() as b, web.events() as c, web.events() as d:
        assert [s.status for s in (a, b, c, d)] == [200] * 4
        for stream in (a, b, c, d):
            stream.next()
        with web.events() as e:
            assert e.status == 429


# --- API keys: logging in, failing to, and the token that never leaves the server ---------------------------------


def test_login_with_an_api_key(make_daemon: DaemonFactory, certificate: Certificate, key: Key) -> None:
    """Over HTTPS with the daemon's certificate; before login only the login itself is possible; the key gives a
    new cookie (the old one is worth nothing), and the sessions it starts belong to the key."""
    daemon = make_daemon(with_page(secured(example_config("5s"), certificate, (key,))))
    web = tls_client(daemon, certificate, "127.0.0.2")
    assert web.state()["auth_required"] is True
    with web.events() as stream:
        assert stream.status == 401
    assert web.post("/api/sessions").status == 401
    assert web.post("/api/stop_all").status == 401  # no public_stop
    anonymous = (web.cookie, web.csrf)
    assert web.login("phone", key.key).status == 200
    assert web.cookie != anonymous[0] and web.csrf != anonymous[1]
    assert web.state()["logged_in"] is True and web.state()["key_id"] == "phone"
    assert key.key not in web.request("GET", "/api/state").body.decode()
    sid = web.post("/api/sessions").json()["id"]
    (session,) = [s for s in daemon.sessions.all() if s.id == sid]
    assert session.owner == "key:phone" and session.peer.startswith("ipv4:127.0.0.2:")
    with web.events() as stream:
        assert stream.status == 200 and stream.next()[1]["status"]["sessions"][0]["mine"] is True
    old = WebClient(web.port, source="127.0.0.2", tls=web.tls, cookie=anonymous[0], csrf=anonymous[1])
    assert old.post("/api/sessions").status == 403
    logout = web.post("/api/logout")
    assert logout.status == 200 and logout.json()["logged_in"] is False
    web.csrf = logout.json()["csrf"]
    assert web.post("/api/sessions").status == 401


def test_a_failed_login_is_a_failed_authenticate(make_daemon: DaemonFactory, certificate: Certificate,
                                                 key: Key) -> None:
    """Logged with the browser's address and limited per browser host by the daemon itself: one host that guesses
    keys is held off while another logs in."""
    daemon = make_daemon(with_page(secured(example_config(), certificate, (key,))))
    guesser = tls_client(daemon, certificate, "127.0.0.2")
    with captured(logging.WARNING) as logs:
        replies = [guesser.login("phone", "wrong") for _ in range(7)]
    assert [r.status for r in replies] == [401] * 7
    assert "too many failed attempts from 127.0.0.2" in replies[-1].json()["message"]
    failed = [r for r in logs.records if "phone" in field(r, "AUTH_ENTITY")]
    assert failed and all(field(r, "PEER").startswith("ipv4:127.0.0.2:") for r in failed)
    assert guesser.login("phone", key.key).status == 401  # still held off, even with the right key
    assert tls_client(daemon, certificate, "127.0.0.3").login("phone", key.key).status == 200


def test_stop_all_before_login_with_public_stop(make_daemon: DaemonFactory, certificate: Certificate,
                                                key: Key) -> None:
    daemon = make_daemon(with_page(secured(example_config("5s"), certificate, (key,),
                                           extra_auth="  public_stop: true\n")))
    web = tls_client(daemon, certificate)
    assert web.state()["public_stop"] is True
    assert web.post("/api/stop_all").status == 200
    assert web.post("/api/sessions").status == 401


def test_a_refused_token_logs_the_browser_out(make_daemon: DaemonFactory, certificate: Certificate,
                                              key: Key, tmp_path: Path) -> None:
    """A reload that removes the key revokes its token: the next request through the page is 401 and the visit
    is over (the page shows its login form)."""
    text = with_page(secured(example_config("5s"), certificate, (key,)))
    daemon = make_daemon(text)
    web = tls_client(daemon, certificate)
    assert web.login("phone", key.key).status == 200
    other = new_key("laptop")
    assert daemon.config_path is not None
    Path(daemon.config_path).write_text(text.replace(key.config_line, other.config_line))
    assert daemon.reload()
    assert web.post("/api/sessions").status == 401
    assert web.state()["logged_in"] is False


# --- the open-door rule and what the page cannot do ----------------------------------------------------------------


def test_off_loopback_the_page_needs_keys_and_tls(make_daemon: DaemonFactory, certificate: Certificate,
                                                  key: Key) -> None:
    with pytest.raises(StartupError, match=r"network\.web\.bind_address: refusing to serve 0\.0\.0\.0:0"):
        make_daemon(with_page(example_config(), "0.0.0.0:0"))
    daemon = make_daemon(with_page(secured(example_config(), certificate, (key,)), "0.0.0.0:0"))
    assert daemon.config.bind_address.startswith("127.0.0.1:")  # gRPC stays on loopback; the page reaches it there
    assert tls_client(daemon, certificate).login("phone", key.key).status == 200


def test_client_certificates_rule_the_page_out(make_daemon: DaemonFactory, certificate: Certificate,
                                               tmp_path: Path) -> None:
    text = secured(example_config(), certificate).replace(
        f"key_file: {certificate.key}}}", f"key_file: {certificate.key}, client_ca_file: {certificate.cert}}}")
    with pytest.raises(StartupError, match="client certificate"):
        make_daemon(with_page(text))


def test_a_taken_port_is_a_startup_error(make_daemon: DaemonFactory) -> None:
    first = make_daemon(with_page(example_config()))
    with pytest.raises(StartupError, match=r"network\.web\.bind_address: cannot listen on 127\.0\.0\.1:\d+"):
        make_daemon(with_page(example_config(), f"127.0.0.1:{page_of(first).port}"))


# --- the parts, alone ----------------------------------------------------------------------------------------------


def test_visits_are_bounded_and_expire() -> None:
    now = [0.0]
    visits = Visits(max_visits=3, max_logins=2, clock=lambda: now[0])
    cookies = [visits.new()[0] for _ in range(4)]
    assert visits.find(cookies[0]) is None and visits.find(cookies[3]) is not None and len(visits) == 3
    first, visit = visits.log_in(cookies[3], "phone", "token-1")
    assert visits.find(cookies[3]) is None and visits.find(first) is visit and visit.logged_in
    second = visits.new("laptop", "token-2")[0]
    third = visits.new("tablet", "token-3")[0]
    assert visits.find(first) is None and visit.ended and visit.token is None  # the least recently used login
    visits.end_token("token-2")
    assert visits.find(second) is None and visits.find(third) is not None
    now[0] += 13 * 3600
    assert visits.find(third) is None
    assert visits.find("") is None and visits.find("x" * 1000) is None


def test_upstream_addresses_and_names(tmp_path: Path) -> None:
    assert upstream_target("0.0.0.0:8080", 8080) == "127.0.0.1:8080"
    assert upstream_target("[::]:8080", 9) == "[::1]:9"
    assert upstream_target("192.168.1.5:0", 41000) == "192.168.1.5:41000"
    assert grpc_peer(("10.0.0.7", 51000)) == "ipv4:10.0.0.7:51000"
    assert grpc_peer(("fe80::1", 5, 0, 0)) == "ipv6:[fe80::1]:5"
    assert grpc_peer(("::ffff:10.0.0.7", 5, 0, 0)) == "ipv4:10.0.0.7:5"
    assert grpc_peer(None) == "unknown"
    assert certificate_name(new_certificate(tmp_path / "a", ("rover.local", "localhost")).pem) == "localhost"
    assert certificate_name(new_certificate(tmp_path / "b", ("rover.local",)).pem) == "rover.local"


# --- `rover-safety serve --simulate`: the page in one step -----------------------------------------------------------


def test_serve_simulate_prints_where_the_page_is(tmp_path: Path) -> None:
    """With network.web in the config, `serve --simulate` says where the page is; opening that URL is all it takes."""
    import signal

    from tests.support.hil import served

    config = tmp_path / "rover.yaml"
    config.write_text(with_page(example_config()))
    with served(config, wrap=lambda argv: [*argv, "--simulate"]) as daemon:  # killed at the end whatever happens
        _, found = daemon.wait_line(r"operator page on http://127\.0\.0\.1:(\d+)/$")
        web = WebClient(int(found.group(1)))
        assert web.request("GET", "/").status == 200 and web.state()["auth_required"] is False
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0, daemon.text

#!/usr/bin/env python3
"""Scripted bots and people for the detection test, sent through nginx with the module.

Usage: actors.py GATEWAY_URL bots|people

Every request names its actor in X-Test-Actor (recorded as a parameter: the ground truth)
and its client address in X-Forwarded-For (nginx trusts it from loopback, as behind a load
balancer). People cannot be waited for in a test: their requests carry the moment they would
have been sent in X-Test-At (milliseconds since the epoch), and the evaluation uses it as the
request's time. Bots that run at machine speed send none and keep their real times; bots that
slow themselves down use X-Test-At too.
"""

import json
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

GATEWAY = ""
RNG = random.Random(20261122)

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15"
EDGE = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
MOBILE_APP = "ShopApp/3.2.1 (Android 14; Pixel 8) okhttp/4.12.0"
PYTHON = "python-requests/2.31.0"

PAGE_ASSETS = ["/static/app.js", "/static/app.css", "/static/logo.png"]


class Actor:
    def __init__(self, label, ip, user_agent, start_ms=None):
        self.label = label
        self.ip = ip
        self.user_agent = user_agent
        # None: real time; else the virtual clock in milliseconds.
        self.clock = start_ms
        self.token = None

    def think(self, seconds):
        if self.clock is not None:
            self.clock += int(seconds * 1000)

    def request(self, method, path, body=None, form=False, headers=None):
        data = None
        req_headers = {"User-Agent": self.user_agent} if self.user_agent else {}
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                req_headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                req_headers["Content-Type"] = "application/json"
        req_headers["X-Test-Actor"] = self.label
        req_headers["X-Forwarded-For"] = self.ip
        if self.clock is not None:
            req_headers["X-Test-At"] = str(self.clock)
            # Requests of one burst are a few milliseconds apart.
            self.clock += RNG.randint(3, 25)
        req_headers.update(headers or {})
        req = urllib.request.Request(GATEWAY + path, data=data, method=method, headers=req_headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw = err.read()
            status = err.code
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, None

    def api(self, method, path, body=None):
        """An API call with the session token."""
        if self.token:
            sep = "&" if "?" in path else "?"
            path = f"{path}{sep}token={self.token}"
        return self.request(method, path, body)

    def page(self, name, calls=()):
        """A page view: the document, its assets, then the API calls its script makes."""
        self.request("GET", f"/shop/{name}.html")
        for asset in PAGE_ASSETS:
            self.request("GET", asset)
        for method, path in calls:
            self.api(method, path)

    def login(self, user, password):
        status, body = self.request("POST", "/api/login", {"user": user, "password": password})
        if status == 200:
            self.token = body["hash"]["token"]
        return status


def hours_ago(hours):
    return int(time.time() * 1000 - hours * 3_600_000)


def lognormal(median_s, sigma=0.8):
    return median_s * RNG.lognormvariate(0, sigma)


# People.


def shopper(n, ua, mistype_password=False):
    a = Actor("human:shopper", f"198.51.100.{10 + n}", ua, hours_ago(3 + n * 0.3))
    user = ["alice", "bob", "carol", "dave", "erin", "frank"][n]
    a.page("home", [("GET", "/api/products")])
    a.think(lognormal(6))
    a.page("login")
    a.think(lognormal(8))
    if mistype_password:
        a.login(user, "wrong-" + user)
        a.think(lognormal(5))
    a.login(user, {"alice": "wonderland", "bob": "builder", "carol": "c4r0l!", "dave": "d4v3-2026",
                   "erin": "erin-passw0rd", "frank": "frank1984"}[user])
    for _ in range(RNG.randint(4, 12)):
        a.think(lognormal(12))
        product = RNG.randint(1, 500)
        a.page("product", [("GET", f"/api/products/{product}"), ("GET", "/api/cart")])
        if RNG.random() < 0.3:
            a.think(lognormal(5))
            a.api("GET", "/api/search?q=" + RNG.choice(["lamp", "desk", "chair", "rug"]))
    a.think(lognormal(10))
    a.page("cart", [("GET", "/api/cart")])
    a.think(lognormal(15))
    a.api("POST", "/api/orders", {"item": 1})
    a.think(lognormal(4))
    a.api("POST", "/api/billing/pay", {"amount": "129.00"})
    a.page("account", [("GET", "/api/account")])


def fast_clicker():
    a = Actor("human:fast_clicker", "198.51.100.30", FIREFOX, hours_ago(2.5))
    a.page("login")
    a.think(3)
    a.login("grace", "hopper")
    for _ in range(70):
        a.think(RNG.uniform(0.4, 2.5))
        a.page("product", [("GET", f"/api/products/{RNG.randint(1, 40)}"), ("GET", "/api/cart")])


def dashboard():
    """A dashboard tab left open: two panels refreshed every 30 seconds for two hours."""
    a = Actor("human:dashboard", "198.51.100.31", EDGE, hours_ago(4))
    a.page("login")
    a.think(4)
    a.login("heidi", "heidi#1")
    a.page("dashboard", [("GET", "/api/dashboard/stats"), ("GET", "/api/dashboard/alerts")])
    for _ in range(240):
        a.think(30)
        a.api("GET", "/api/dashboard/stats")
        a.api("GET", "/api/dashboard/alerts")


def mobile_retry():
    """An app on a bad day: every call retried with back-off until it works."""
    a = Actor("human:mobile_retry", "198.51.100.32", MOBILE_APP, hours_ago(2))
    a.login("ivan", "ivan-the-great")
    for _ in range(8):
        a.think(lognormal(20))
        for backoff in (1, 2, 4, 8, 16):
            status, _ = a.api("GET", "/api/flaky")
            if status == 200:
                break
            a.think(backoff * RNG.uniform(0.8, 1.2))
        a.api("GET", "/api/account")


def mistyper():
    """Types addresses by hand and gets some wrong."""
    a = Actor("human:mistyper", "198.51.100.33", SAFARI, hours_ago(1.5))
    a.page("login")
    a.think(6)
    a.login("judy", "judy123")
    typos = ["/api/prodcts", "/api/acount", "/api/ordrs", "/shop/hme.html", "/api/serch?q=lamp",
             "/api/products/12/reviews", "/shop/contact.htm", "/api/cart/items"]
    for typo in typos:
        a.think(lognormal(9))
        a.api("GET", typo)
        a.think(lognormal(4))
        a.page("home", [("GET", "/api/products")])


def power_404():
    """Checks a list of old bookmarks: many products are gone."""
    a = Actor("human:power_404", "198.51.100.34", CHROME, hours_ago(1))
    a.login("alice", "wonderland")
    for product in [12, 640, 712, 88, 901, 555, 1020, 3, 777, 845, 990, 612, 47, 1300, 520, 699]:
        a.think(lognormal(5))
        a.page("product", [("GET", f"/api/products/{product}")])


def admin_bulk():
    """An administrator updating 150 accounts from the admin screen's bulk action."""
    a = Actor("human:admin_bulk", "198.51.100.35", CHROME, hours_ago(2.2))
    a.page("admin")
    a.think(5)
    a.login("root", "admin-s3cr3t")
    a.page("admin-users", [("GET", "/api/admin/users")])
    a.think(40)
    for user in range(10, 160):
        a.api("PATCH", f"/api/admin/users/{user}", {"plan": "pro"})
        a.think(RNG.uniform(0.05, 0.3))
    a.think(20)
    a.page("admin-users", [("GET", "/api/admin/users")])


def office():
    """Colleagues behind one address with the same browser build, each in a session of their own."""
    start = hours_ago(5)
    for i in range(14):
        a = Actor("human:office", "192.0.2.50", CHROME, start + i * RNG.randint(60_000, 300_000))
        a.page("login")
        a.think(lognormal(6))
        a.login(f"colleague{i}", f"office-{i}")
        for _ in range(RNG.randint(5, 10)):
            a.think(lognormal(15))
            a.page("product", [("GET", f"/api/products/{RNG.randint(1, 500)}"), ("GET", "/api/cart")])


# Bots.


def enumeration():
    """Logs in once, then walks other people's orders (BOLA)."""
    a = Actor("bot:enumeration", "203.0.113.20", CHROME)
    a.login("bob", "builder")
    for order in range(1000, 1240):
        a.api("GET", f"/api/orders/{order}")


def sms_pumping():
    """Sends verification codes to premium numbers through the SMS endpoint."""
    a = Actor("bot:sms_pumping", "203.0.113.21", MOBILE_APP, hours_ago(0.8))
    a.login("carol", "c4r0l!")
    for i in range(40):
        a.api("POST", "/api/sms/send", {"to": f"+881{RNG.randint(10**8, 10**9 - 1)}"})
        a.think(RNG.uniform(0.5, 2.0))


def stuffing_list(n, hits):
    pairs = [(f"victim{i}@example.com", f"Password{i}!") for i in range(n - hits)]
    pairs += [(f"leaked{i}@example.com", f"Summer{i}!") for i in range(hits)]
    RNG.shuffle(pairs)
    return pairs


def credential_stuffing():
    """Leaked pairs tried one after the other; every login that works gets a token of its own
    and is used at once."""
    a = Actor("bot:credential_stuffing", "203.0.113.22", PYTHON, hours_ago(0.6))
    for user, password in stuffing_list(120, 12):
        a.token = None
        if a.login(user, password) == 200:
            a.api("GET", "/api/account")
        a.think(RNG.uniform(0.2, 0.8))


def slow_stuffing():
    """The same, slowed to one attempt every 40 seconds or so behind a browser's User-Agent."""
    a = Actor("bot:slow_stuffing", "203.0.113.23", SAFARI, hours_ago(1.5))
    for user, password in stuffing_list(60, 6):
        a.token = None
        if a.login(user, password) == 200:
            a.api("GET", "/api/account")
        a.think(RNG.uniform(30, 50))


def scraper():
    """Copies the catalogue, a product every second and a half or so."""
    a = Actor("bot:scraper", "203.0.113.24", CHROME, hours_ago(1.2))
    for product in range(1, 301):
        a.request("GET", f"/api/products/{product}")
        a.think(RNG.uniform(1.3, 1.7))


def signup_abuse():
    """Creates accounts in bulk, each verified by SMS right away."""
    a = Actor("bot:signup_abuse", "203.0.113.25", PYTHON, hours_ago(0.7))
    for i in range(30):
        status, body = a.request("POST", "/api/signup", {"user": f"promo{i}@mail.example", "password": "x"})
        a.token = body["hash"]["token"] if status == 201 else None
        a.api("POST", "/api/sms/send", {"to": f"+1555{RNG.randint(1000000, 9999999)}"})
        a.think(RNG.uniform(2, 6))


PEOPLE = [
    lambda: shopper(0, CHROME),
    lambda: shopper(1, FIREFOX, mistype_password=True),
    lambda: shopper(2, SAFARI),
    lambda: shopper(3, EDGE, mistype_password=True),
    lambda: shopper(4, CHROME),
    lambda: shopper(5, FIREFOX),
    fast_clicker,
    dashboard,
    mobile_retry,
    mistyper,
    power_404,
    admin_bulk,
    office,
]

BOTS = [enumeration, sms_pumping, credential_stuffing, slow_stuffing, scraper, signup_abuse]


def main():
    global GATEWAY
    GATEWAY = sys.argv[1].rstrip("/")
    for actor in {"bots": BOTS, "people": PEOPLE}[sys.argv[2]]:
        actor()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The two halves of scripts/auth-flood.sh (Python 3 standard library only).

  auth_flood.py gen DIR --containers N --mib M
      Writes the container directories `cairn dev` backs up (see benchlib.gen).

  auth_flood.py run --rest URL --xml HOST:PORT --pid PID [options]
      Floods the gateway of `cairn dev` (process PID) without credentials, concurrently:
      --attempts REST requests with HTTP Basic and a wrong password (half of them for user
      admin, half for names that do not exist) over --concurrency connections, and
      --xml-flooders XML connections that write `x\\0` (a malformed packet) as fast as the
      server takes it and never read. Meanwhile one logged-in client (user admin, password
      from CAIRN_DEV_PASSWORD) keeps alternating a REST `GET /vdc` and an XML
      `backupm/get_config`, one at a time. The run ends when every REST attempt has been
      answered. Prints the process's memory (VmRSS before, VmHWM during, the RSS over time),
      what the floods got, what the gateway's /metrics say, the logged-in client's requests
      and latency, then PASS or FAIL. Exit status 0 PASS, 1 FAIL, 2 when the run could not be
      made.

Memory is read from /proc/PID/status. The peak resident size is reset (`5` written to
/proc/PID/clear_refs) once the logged-in client is ready, just before the floods start, so
VmHWM is the peak of the flood itself; where that is not permitted the start-up peak is
included, and the report says so. The verdict: PASS when that peak stays within the bound
(the resident size before the flood + --budget-mib) and every logged-in request was answered
correctly (REST 200 with a JSON body, XML an answer without `error`).

A REST flood attempt counts as refused on 401, as busy on 503 with code `busy` and a
Retry-After header, as other on anything else (a 200 would be a break-in); a connection error
is counted apart. Latency is measured in the client, request sent to answer read.
"""

import base64
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

import benchlib
from xml_clients import Closed, Timeout, CallError, connect_and_login, describe

MIB = 1024 * 1024

# ---------------------------------------------------------------------------------- memory


def proc_status(pid):
    """VmRSS and VmHWM of the process in bytes (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    kib = lambda k: int(fields[k].split()[0]) * 1024 if k in fields else 0
    return kib("VmRSS"), kib("VmHWM")


def reset_peak(pid):
    """Resets the process's VmHWM to its current RSS; False when not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Sampler(threading.Thread):
    """The process's RSS every `every` seconds until stopped: (seconds, rss, hwm). Sets
    `abort` once the RSS passes `abort_bytes`, so that the floods stop before the machine
    runs out of memory."""

    def __init__(self, pid, abort_bytes, every=0.1):
        super().__init__(daemon=True)
        self.pid, self.every, self.abort_bytes = pid, every, abort_bytes
        self.samples = []
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.t0 = time.perf_counter()

    def run(self):
        while not self.stop.is_set():
            s = proc_status(self.pid)
            if s is not None:
                self.samples.append((time.perf_counter() - self.t0, *s))
                if s[0] > self.abort_bytes:
                    self.abort.set()
            self.stop.wait(self.every)


def mib(n):
    return f"{n / MIB:.1f} MiB"


# ---------------------------------------------------------------------------------- floods


class RestFlood:
    """`attempts` wrong-password requests over `concurrency` keep-alive connections."""

    def __init__(self, host, port, path, attempts, concurrency, timeout, abort):
        self.host, self.port, self.path = host, port, path
        self.timeout, self.abort = timeout, abort
        self.left = attempts
        self.lock = threading.Lock()
        self.refused, self.busy, self.other, self.errors = [], [], [], []
        self.threads = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                        for i in range(concurrency)]

    def take(self):
        with self.lock:
            if self.left <= 0 or self.abort.is_set():
                return None
            self.left -= 1
            return self.left

    def worker(self, idx):
        conn = None
        while (n := self.take()) is not None:
            name = "admin" if n % 2 == 0 else f"nobody{n % 97}"
            auth = base64.b64encode(f"{name}:wrong-{idx}-{n}".encode()).decode()
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("GET", self.path, headers={"Authorization": f"Basic {auth}"})
                resp = conn.getresponse()
                body = resp.read()
                took = time.perf_counter() - started
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.errors.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
                continue
            with self.lock:
                if resp.status == 401:
                    self.refused.append(took)
                elif resp.status == 503 and is_busy(body) and resp.getheader("Retry-After"):
                    self.busy.append(took)
                else:
                    self.other.append(f"HTTP {resp.status}: {body[:200]!r}")
        if conn is not None:
            conn.close()

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        """Waits for every attempt to be answered, or for the abort (then the ones in flight
        are left to their timeout)."""
        for t in self.threads:
            while t.is_alive() and not self.abort.is_set():
                t.join(0.2)


def is_busy(body):
    try:
        return json.loads(body)["message"][0]["code"] == "busy"
    except (ValueError, KeyError, IndexError, TypeError):
        return False


class XmlFlooder(threading.Thread):
    """One connection writing `x\\0` packets as fast as the server takes them, never reading."""

    CHUNK = b"x\0" * 32768

    def __init__(self, host, port):
        super().__init__(daemon=True)
        self.host, self.port = host, port
        self.sent = 0
        self.last_progress = time.perf_counter()
        self.error = None
        self.sock = None
        self.stopping = False

    def run(self):
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=30)
            self.sock.settimeout(None)
            while not self.stopping:
                self.sock.sendall(self.CHUNK)
                self.sent += len(self.CHUNK) // 2
                self.last_progress = time.perf_counter()
        except OSError as e:
            if not self.stopping:
                self.error = repr(e)

    def stop(self):
        self.stopping = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


# ---------------------------------------------------------------------------------- logged in


class LoggedIn(threading.Thread):
    """The logged-in client: REST GET /vdc and XML get_config in turn until stopped."""

    def __init__(self, host, port, xml_host, xml_port, password, timeout):
        super().__init__(daemon=True)
        self.host, self.port = host, port
        self.xml_host, self.xml_port = xml_host, xml_port
        self.password, self.timeout = password, timeout
        self.auth = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
        self.rest, self.xml = [], []
        self.failures = []
        self.stop = threading.Event()
        self.rest_conn = None
        self.xml_conn = None
        self.t0 = time.perf_counter()

    def rest_once(self):
        if self.rest_conn is None:
            self.rest_conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.rest_conn.request("GET", "/vdc", headers={"Authorization": self.auth})
        resp = self.rest_conn.getresponse()
        body = resp.read()
        if resp.will_close:
            self.rest_conn.close()
            self.rest_conn = None
        if resp.status != 200:
            raise CallError(f"HTTP {resp.status}: {body[:200]!r}")
        json.loads(body)

    def xml_once(self, n):
        if self.xml_conn is None:
            self.xml_conn = connect_and_login(self.xml_host, self.xml_port, "admin",
                                              self.password, self.timeout)
        p = self.xml_conn.call(f"cfg{n}", "<get_config/>", time.perf_counter() + self.timeout)
        if p.errors:
            raise CallError(p.error_text())

    def one(self, n):
        """One request (REST on even n, XML on odd); True when answered correctly."""
        started = time.perf_counter()
        try:
            if n % 2 == 0:
                self.rest_once()
            else:
                self.xml_once(n)
        except (OSError, http.client.HTTPException, ValueError, Closed, Timeout, CallError) as e:
            what = "REST GET /vdc" if n % 2 == 0 else "XML get_config"
            self.failures.append((started - self.t0, what, describe(e)))
            if n % 2 == 0 and self.rest_conn is not None:
                self.rest_conn.close()
                self.rest_conn = None
            if n % 2 == 1 and self.xml_conn is not None:
                self.xml_conn.close()
                self.xml_conn = None
            return False
        (self.rest if n % 2 == 0 else self.xml).append(time.perf_counter() - started)
        return True

    def run(self):
        n = 0
        while not self.stop.is_set():
            self.one(n)
            n += 1


# ---------------------------------------------------------------------------------- metrics


def scrape(host, port, auth, timeout):
    """The gateway's /metrics as {name{labels}: value}."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": auth})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"/metrics: HTTP {resp.status}")
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def metric_sum(metrics, name, label=""):
    return sum(v for k, v in metrics.items()
               if (k == name or k.startswith(name + "{")) and label in k)


# ---------------------------------------------------------------------------------- run


def run(args):
    log = benchlib.make_log("auth-flood")
    password = benchlib.dev_password("auth-flood")
    if password is None:
        return 2
    url = urllib.parse.urlsplit(args.rest)
    host, port = url.hostname, url.port or 80
    xml_host, _, xml_port = args.xml.rpartition(":")
    xml_port = int(xml_port)
    auth = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()

    # The logged-in client first: its login is then cached, as a real client's would be.
    client = LoggedIn(host, port, xml_host, xml_port, password, args.timeout)
    deadline = time.perf_counter() + 120

    def ready():
        ok = client.one(0) and client.one(1)
        return (True, None) if ok else (None, client.failures[-1][2])

    if benchlib.retry(ready, (), deadline, log, "the logged-in client never got an answer") is None:
        return 2
    client.rest.clear()
    client.xml.clear()
    client.failures.clear()

    before = proc_status(args.pid)
    if before is None:
        log(f"no process {args.pid}")
        return 2
    rss0, startup_hwm = before
    reset = reset_peak(args.pid)
    bound = rss0 + args.budget_mib * MIB
    log(f"before the flood: VmRSS {mib(rss0)}, start-up VmHWM {mib(startup_hwm)}"
        + ("; peak reset" if reset else "; the peak cannot be reset here (it includes start-up)"))

    sampler = Sampler(args.pid, args.abort_mib * MIB)
    sampler.start()
    flooders = [XmlFlooder(xml_host, xml_port) for _ in range(args.xml_flooders)]
    for f in flooders:
        f.start()
    rest = RestFlood(host, port, "/vdc", args.attempts, args.concurrency, args.timeout,
                     sampler.abort)
    client.t0 = time.perf_counter()
    client.start()
    started = time.perf_counter()
    log(f"flooding: {args.attempts} wrong REST logins over {args.concurrency} connections, "
        f"{args.xml_flooders} XML connections writing x\\0 without reading")
    rest.start()
    rest.join()
    took = time.perf_counter() - started
    if sampler.abort.is_set():
        log(f"the process passed {args.abort_mib} MiB: floods stopped")
    client.stop.set()
    client.join(args.timeout + 5)
    stalled = sum(1 for f in flooders if time.perf_counter() - f.last_progress > 2.0)
    for f in flooders:
        f.stop()
    for f in flooders:
        f.join(5)
    time.sleep(0.3)
    sampler.stop.set()
    sampler.join()
    after = proc_status(args.pid)
    try:
        m = scrape(host, port, auth, args.timeout)
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        log(f"cannot read /metrics: {e!r}")
        m = {}

    # ------------------------------------------------------------------ report
    samples = sampler.samples
    peak_rss = max((s[1] for s in samples), default=0)
    hwm = max([s[2] for s in samples] + ([after[1]] if after else []))
    print()
    print(f"cairn dev pid {args.pid} (3 nodes, agent and gateway in one process)")
    print(f"memory before the flood  VmRSS {mib(rss0)}  (start-up VmHWM {mib(startup_hwm)}"
          + (", then reset)" if reset else ", not reset: included below)"))
    print(f"memory during the flood  VmHWM {mib(hwm)}  sampled VmRSS max {mib(peak_rss)}"
          + (f"  after {mib(after[0])}" if after else ""))
    print(f"memory bound             {mib(bound)}  (VmRSS before + {args.budget_mib} MiB)")
    step = max(1, len(samples) // 12)
    print("VmRSS over time          " + "  ".join(
        f"{t:.0f}s {r / MIB:.0f}" for t, r, _ in samples[::step]) + "  (MiB)")
    print()
    answered = len(rest.refused) + len(rest.busy)
    if sampler.abort.is_set():
        print(f"ABORTED                  VmRSS passed {args.abort_mib} MiB after {took:.1f} s; "
              "the floods were stopped there")
    print(f"REST flood               {args.attempts} wrong-password attempts in {took:.1f} s, "
          f"{args.concurrency} connections: {answered} answered, "
          f"{len(rest.refused)} refused 401, {len(rest.busy)} busy 503, "
          f"{len(rest.other)} other, {len(rest.errors)} connection errors")
    print(f"  401 latency ms         {benchlib.latency_line(sorted(rest.refused))}")
    print(f"  503 latency ms         {benchlib.latency_line(sorted(rest.busy))}")
    sent = sorted(f.sent for f in flooders)
    print(f"XML flood                {len(flooders)} connections wrote {sum(sent):,} packets "
          f"(per connection {sent[0] if sent else 0:,} to {sent[-1] if sent else 0:,}); "
          f"{stalled} had stopped being read at the end; "
          f"{sum(1 for f in flooders if f.error)} errors")
    malformed = metric_sum(m, "cairn_xml_requests_total", 'code="300"')
    print(f"  gateway                {malformed:,.0f} "
          f"malformed packets answered, reads paused {metric_sum(m, 'cairn_xml_read_pauses_total'):,.0f} "
          f"times, queue peak {metric_sum(m, 'cairn_xml_queue_peak_packets'):.0f} packets / "
          f"{metric_sum(m, 'cairn_xml_queue_peak_bytes') / 1024:.0f} KiB per connection")
    print(f"login gate               verifications at once at most "
          f"{metric_sum(m, 'cairn_auth_hashing_peak'):.0f}, refused busy "
          f"{metric_sum(m, 'cairn_auth_busy_total'):,.0f}")
    total = len(client.rest) + len(client.xml) + len(client.failures)
    print(f"logged-in client         {total} requests: REST {len(client.rest)} ok, "
          f"XML {len(client.xml)} ok, {len(client.failures)} failed")
    print(f"  REST latency ms        {benchlib.latency_line(sorted(client.rest))}")
    print(f"  XML latency ms         {benchlib.latency_line(sorted(client.xml))}")
    benchlib.print_firsts(client.failures, [("flood answer", o) for o in rest.other])

    problems = benchlib.request_problems(total, len(client.failures))
    if hwm > bound:
        problems.append(f"peak memory {mib(hwm)} > bound {mib(bound)}")
    if sampler.abort.is_set():
        problems.append(f"the floods were stopped at {args.abort_mib} MiB")
    if rest.other:
        problems.append(f"{len(rest.other)} flood attempt(s) answered neither 401 nor 503 busy")
    if not client.rest or not client.xml:
        problems.append("the logged-in client did not get both REST and XML answers")
    return benchlib.verdict(
        problems,
        f"PASS: peak memory {mib(hwm)} <= bound {mib(bound)}; every logged-in request "
        f"answered ({total}, REST p99 "
        f"{benchlib.pct(sorted(client.rest), 99) * 1000:.0f} ms, XML p99 "
        f"{benchlib.pct(sorted(client.xml), 99) * 1000:.0f} ms)")


def main():
    ap, sub = benchlib.parser(__doc__)
    r = sub.add_parser("run", help="measure")
    r.add_argument("--rest", required=True, help="the REST API, e.g. http://127.0.0.1:8080/")
    r.add_argument("--xml", required=True, help="the XML API, e.g. 127.0.0.1:4433")
    r.add_argument("--pid", type=int, required=True, help="the cairn dev process")
    r.add_argument("--attempts", type=int, default=10000)
    r.add_argument("--concurrency", type=int, default=64)
    r.add_argument("--xml-flooders", type=int, default=16)
    r.add_argument("--budget-mib", type=int, default=128,
                   help="how much the resident size may grow over its pre-flood value")
    r.add_argument("--abort-mib", type=int, default=4096,
                   help="stop the floods when the process's resident size passes this")
    r.add_argument("--timeout", type=float, default=30.0,
                   help="a logged-in request unanswered this long fails")
    args = ap.parse_args()
    if args.cmd == "gen":
        return benchlib.gen(args, "auth-flood")
    if args.attempts < 1 or args.concurrency < 1 or args.xml_flooders < 0:
        ap.error("--attempts and --concurrency must be at least 1, --xml-flooders at least 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

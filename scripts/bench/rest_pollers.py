#!/usr/bin/env python3
"""The two halves of scripts/rest-bench.sh (Python 3 standard library only).

  rest_pollers.py gen DIR --containers N --mib M
      Writes N container directories c1..cN under DIR, each with M MiB of fresh random data
      in three files (var/lib/data/blob-*.bin) and a few hundred small files (srv/small/),
      plus etc/hostname and etc/os-release.

  rest_pollers.py run --url http://127.0.0.1:PORT/ --containers DIR [options]
      Walks the REST API from GET / to the VMs, keeps a backup running on every VM for the
      whole window (a driver thread: when one finishes it changes a few bytes of one file of
      that container and starts the next), while --clients poller threads, each with its own
      persistent HTTP/1.1 connection, GET the status URIs as fast as they are answered.
      Prints the request count, rate, failures, latency percentiles and the backups, then
      PASS or FAIL. Exit status 0 on PASS, 1 on FAIL, 2 when the run could not start.
      The password of user admin comes from the environment variable CAIRN_DEV_PASSWORD.

A request is *answered* when it gets HTTP 200 with a body that parses as a JSON Status
(an object with `op`, `progress` and `status_uri`); anything else (another code, a body that
does not parse, a connection error, no answer within --timeout) is a failure. Latency is the
wall clock (time.perf_counter) from sending the request to having read and parsed the body.
"""

import base64
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

import benchlib

# ---------------------------------------------------------------------------------- http


class Conn:
    """One persistent HTTP/1.1 connection; reopened on the next request after any error."""

    def __init__(self, host, port, auth, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.auth = auth
        self.conn = None

    def request(self, method, path, body=None):
        headers = {"Authorization": self.auth}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
            if resp.will_close:
                self.close()
            return resp.status, raw
        except BaseException:
            self.close()
            raise

    def get_json(self, uri):
        status, raw = self.request("GET", path_of(uri))
        if status != 200:
            raise RuntimeError(f"GET {uri}: HTTP {status}: {raw[:300]!r}")
        return json.loads(raw)

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None


def path_of(uri):
    """The path (and query) of an absolute URI: every client talks to the one --url server."""
    u = urllib.parse.urlsplit(uri)
    return (u.path or "/") + (f"?{u.query}" if u.query else "")


def is_status(doc):
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("op"), str)
        and isinstance(doc.get("progress"), int)
        and isinstance(doc.get("status_uri"), str)
    )


# ---------------------------------------------------------------------------------- shared


class Board:
    """The status URIs the driver publishes: running ones, and finished ones."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = []
        self.finished = []

    def publish(self, uri):
        with self.lock:
            self.running.append(uri)

    def done(self, uri):
        with self.lock:
            if uri in self.running:
                self.running.remove(uri)
            self.finished.append(uri)

    def pick(self, rng):
        with self.lock:
            pool = self.running or self.finished
            return rng.choice(pool) if pool else None


class Job:
    def __init__(self, vm, status_uri, started):
        self.vm = vm
        self.status_uri = status_uri
        self.started = started  # perf_counter when the POST was answered
        self.ended = None  # perf_counter when the driver saw progress 100
        self.status = None
        self.message = None


class Vm:
    def __init__(self, doc, cdir):
        self.name = doc["name"]
        self.uri = doc["uri"]
        self.back_up = doc["back_up"]
        self.dir = os.path.join(cdir, self.name) if cdir else None
        self.job = None
        self.retry_at = 0.0


# ---------------------------------------------------------------------------------- driver


class Driver:
    """Keeps a backup running (or queued) on every VM until the window ends."""

    def __init__(self, conn, vms, board, touch, change_bytes, log):
        self.conn, self.vms, self.board, self.touch, self.log = conn, vms, board, touch, log
        self.change_bytes = change_bytes
        self.jobs = []
        self.errors = []  # (what, detail)
        self.requests = 0
        self.conflicts = 0
        self.touched = 0
        self.rng = random.Random()

    def start(self, vm, now):
        self.requests += 1
        try:
            status, raw = self.conn.request("POST", path_of(vm.back_up), {"description": "rest-bench"})
        except Exception as e:  # noqa: BLE001 - every error is reported
            self.errors.append((f"POST {vm.back_up}", repr(e)))
            vm.retry_at = now + 1.0
            return
        if status == 409:
            self.conflicts += 1
            vm.retry_at = now + 0.5
            return
        try:
            doc = json.loads(raw) if status == 202 else None
        except ValueError:
            doc = None
        if status != 202 or not is_status(doc):
            self.errors.append((f"POST {vm.back_up}", f"HTTP {status}: {raw[:300]!r}"))
            vm.retry_at = now + 1.0
            return
        job = Job(vm, doc["status_uri"], time.perf_counter())
        vm.job = job
        self.jobs.append(job)
        self.board.publish(job.status_uri)

    def check(self, vm):
        """Polls the VM's job; True when it has finished (progress 100)."""
        job = vm.job
        self.requests += 1
        try:
            doc = self.conn.get_json(job.status_uri)
        except Exception as e:  # noqa: BLE001
            self.errors.append((f"GET {job.status_uri}", repr(e)))
            return False
        if not is_status(doc) or doc["progress"] < 100:
            return False
        job.ended = time.perf_counter()
        job.status = doc.get("status")
        job.message = doc.get("message")
        vm.job = None
        self.board.done(job.status_uri)
        return True

    def change_a_file(self, vm):
        """New bytes (64, or --change-mib MiB) in one big file of the container, so the next
        backup has something to upload."""
        if benchlib.change_a_file(vm.dir, vm.name, self.rng, self.change_bytes, self.errors):
            self.touched += 1

    def start_all(self, deadline):
        """Starts a backup on every VM (before the window opens)."""
        while time.perf_counter() < deadline:
            now = time.perf_counter()
            for vm in self.vms:
                if vm.job is None and now >= vm.retry_at:
                    self.start(vm, now)
            if all(vm.job is not None for vm in self.vms):
                return True
            time.sleep(0.2)
        return any(vm.job is not None for vm in self.vms)

    def run(self, end, tick=0.25):
        """Until `end`: poll the jobs; restart each VM's backup when it finishes."""
        while True:
            now = time.perf_counter()
            if now >= end:
                return
            for vm in self.vms:
                if vm.job is not None:
                    if self.check(vm) and self.touch and time.perf_counter() < end:
                        self.change_a_file(vm)
                if vm.job is None and time.perf_counter() < end and time.perf_counter() >= vm.retry_at:
                    self.start(vm, time.perf_counter())
            time.sleep(max(0.0, min(tick, end - time.perf_counter())))

    def drain(self, deadline, tick=0.5):
        """After the window: waits for the backups still running (no new ones)."""
        while any(vm.job is not None for vm in self.vms) and time.perf_counter() < deadline:
            for vm in self.vms:
                if vm.job is not None:
                    self.check(vm)
            time.sleep(tick)


# ---------------------------------------------------------------------------------- pollers


class Poller(threading.Thread):
    def __init__(self, idx, conn, board, go, end_box, interval, seed):
        super().__init__(name=f"poller-{idx}", daemon=True)
        self.conn, self.board, self.go, self.end_box = conn, board, go, end_box
        self.interval = interval
        self.rng = random.Random(seed)
        self.latencies = []
        self.failures = []  # (seconds into the window, uri, what)
        self.errors = 0

    def run(self):
        self.go.wait()
        end = self.end_box[0]
        start = self.end_box[1]
        while True:
            uri = self.board.pick(self.rng)
            t0 = time.perf_counter()
            if t0 >= end:
                break
            if uri is None:
                time.sleep(0.01)
                continue
            what = None
            try:
                status, raw = self.conn.request("GET", path_of(uri))
                if status != 200:
                    what = f"HTTP {status}: {raw[:200]!r}"
                else:
                    try:
                        doc = json.loads(raw)
                    except ValueError as e:
                        doc = None
                        what = f"HTTP 200 but the body does not parse: {e}: {raw[:200]!r}"
                    if what is None and not is_status(doc):
                        what = f"HTTP 200 but not a Status: {raw[:200]!r}"
            except Exception as e:  # noqa: BLE001 - connection errors and timeouts are failures
                what = repr(e)
            t1 = time.perf_counter()
            self.latencies.append(t1 - t0)
            if what is not None:
                self.failures.append((t0 - start, uri, what))
            if self.interval > 0:
                time.sleep(self.interval)
        self.conn.close()


# ---------------------------------------------------------------------------------- walk


def discover(conn, base, expect, deadline, log):
    """GET / -> vdcs[0] -> its cluster's host clusters -> their vms."""

    def attempt():
        cloud = conn.get_json(base)
        vdc = conn.get_json(cloud["vdcs"][0]["uri"])
        vms = []
        for link in vdc["cluster"]["clusters"]:
            host = conn.get_json(link["uri"])
            vms.extend(host.get("vms", []))
        if len(vms) >= max(1, expect):
            return vms, None
        return None, f"{len(vms)} VM(s) so far, waiting for {expect}"

    return benchlib.retry(attempt, Exception, deadline, log, "could not find the VMs through the REST API")


# ---------------------------------------------------------------------------------- report


def size_text(n):
    return f"{n / (1024 * 1024):g} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def run(args):
    password = benchlib.dev_password("rest-bench")
    if password is None:
        return 2
    auth = "Basic " + base64.b64encode(f"{args.user}:{password}".encode()).decode()
    u = urllib.parse.urlsplit(args.url)
    host, port = u.hostname, u.port or 80
    base = args.url if args.url.endswith("/") else args.url + "/"

    log = benchlib.make_log("rest-bench")

    walker = Conn(host, port, auth, args.timeout)
    docs = discover(walker, base, args.expect_vms, time.perf_counter() + 60, log)
    walker.close()
    if not docs:
        return 2
    vms = [Vm(d, args.containers) for d in docs]
    log(f"found {len(vms)} VM(s) by walking from {base}: " + ", ".join(v.name for v in vms))

    board = Board()
    change_bytes = int(args.change_mib * 1024 * 1024) if args.change_mib > 0 else 64
    driver = Driver(Conn(host, port, auth, args.timeout), vms, board, not args.no_touch, change_bytes, log)
    if not driver.start_all(time.perf_counter() + 60):
        log("could not start any backup: " + "; ".join(f"{w}: {d}" for w, d in driver.errors[:3]))
        return 2
    log(f"backups started on {sum(v.job is not None for v in vms)} VM(s); "
        f"{args.clients} pollers for {args.seconds:g} s")

    go = threading.Event()
    end_box = [0.0, 0.0]
    pollers = [
        Poller(i, Conn(host, port, auth, args.timeout), board, go, end_box, args.interval, i)
        for i in range(args.clients)
    ]
    for p in pollers:
        p.start()
    start = time.perf_counter()
    end = start + args.seconds
    end_box[0], end_box[1] = end, start
    go.set()
    driver.run(end)
    # Pollers finish the request they have in flight (bounded by --timeout).
    for p in pollers:
        p.join(args.timeout + 5)
    stuck = sum(p.is_alive() for p in pollers)
    window_end = time.perf_counter()
    running_at_end = sum(v.job is not None for v in vms)
    if running_at_end:
        log(f"window over; waiting up to {args.drain_seconds:g} s for the {running_at_end} "
            "backup(s) still running to finish (to check how they end)")
    driver.drain(time.perf_counter() + args.drain_seconds)

    # ------------------------------------------------------------------ numbers
    lat = sorted(x for p in pollers for x in p.latencies)
    failures = sorted((f for p in pollers for f in p.failures), key=lambda f: f[0])
    total = len(lat)
    elapsed = window_end - start
    p99 = benchlib.pct(lat, 99) * 1000.0
    over_1s = sum(1 for x in lat if x > 1.0)

    in_window = [j for j in driver.jobs if j.ended is not None and j.ended <= end]
    ok_in_window = [j for j in in_window if j.status == 201]
    bad = [j for j in driver.jobs if j.ended is not None and j.status != 201]
    unfinished = [j for j in driver.jobs if j.ended is None]
    durations = sorted(j.ended - j.started for j in driver.jobs if j.ended is not None and j.status == 201)
    busy = benchlib.busy_fraction(driver.jobs, start, end)

    print()
    print("== rest-bench: status polling while backups run ==")
    print(f"clients               {args.clients} (one persistent HTTP/1.1 connection each"
          + (f", {args.interval:g} s pause between requests)" if args.interval > 0 else ", no pause between requests)"))
    print(f"window                {elapsed:.1f} s ({args.seconds:g} s requested); "
          f"backups queued or running during {busy * 100:.0f}% of it")
    print(f"requests              {total}")
    print(f"requests/s            {total / elapsed if elapsed > 0 else 0:.1f}")
    print(f"failures              {len(failures)}" + (f"  (+{stuck} poller(s) still waiting at the end)" if stuck else ""))
    print(f"latency ms            {benchlib.latency_line(lat, empty=None)}")
    print(f"requests over 1 s     {over_1s}")
    print(f"backups started       {len(driver.jobs)} on {len(vms)} VM(s)"
          + (f" ({driver.touched} after changing {size_text(change_bytes)} of one file)" if driver.touched else ""))
    print(f"backups completed     {len(ok_in_window)} during the window (status 201)")
    benchlib.print_durations(durations, "POST answered to progress 100 seen; includes queueing")
    print(f"driver                {driver.requests} requests, {len(driver.errors)} error(s), "
          f"{driver.conflicts} 409 (backup already running) answer(s)")
    if unfinished:
        print(f"still running         {len(unfinished)} backup(s) had not finished "
              f"{args.drain_seconds:g} s after the window: "
              + ", ".join(f"{j.vm.name} {j.status_uri}" for j in unfinished))
    if bad:
        print(f"backups not 201       {len(bad)}:")
        for j in bad:
            print(f"  {j.vm.name}: status {j.status} {j.message!r} ({j.status_uri})")
    else:
        print("backups not 201       none")
    benchlib.print_firsts([(t, f"GET {uri}", what) for t, uri, what in failures], driver.errors)

    limit = args.p99_limit_ms
    problems = benchlib.request_problems(total, len(failures) + stuck)
    if not p99 <= limit:
        problems.append(f"p99 {p99:.1f} ms > {limit:g} ms")
    if bad:
        problems.append(f"{len(bad)} backup(s) ended with a status other than 201")
    if not driver.jobs:
        problems.append("no backup ran")
    return benchlib.verdict(problems, f"PASS: every request answered, p99 {p99:.1f} ms <= {limit:g} ms")


def main():
    ap, sub = benchlib.parser(__doc__)
    r = sub.add_parser("run", help="measure")
    r.add_argument("--url", required=True, help="the REST API, e.g. http://127.0.0.1:8080/")
    r.add_argument("--user", default="admin")
    r.add_argument("--containers", help="the container directory (to change a file between backups)")
    r.add_argument("--clients", type=int, default=50)
    r.add_argument("--seconds", type=float, default=30.0)
    r.add_argument("--interval", type=float, default=0.0, help="pause of each poller between requests")
    r.add_argument("--timeout", type=float, default=30.0, help="a request unanswered this long fails")
    r.add_argument("--expect-vms", type=int, default=1, help="wait until at least this many VMs show")
    r.add_argument("--drain-seconds", type=float, default=120.0)
    r.add_argument("--p99-limit-ms", type=float, default=1000.0)
    r.add_argument("--no-touch", action="store_true", help="re-back up unchanged trees")
    r.add_argument("--change-mib", type=float, default=0.0,
                   help="MiB of new random data written into one file before each re-backup (default: 64 bytes)")
    args = ap.parse_args()
    if args.cmd == "gen":
        return benchlib.gen(args, "rest-bench")
    if args.clients < 1 or args.seconds <= 0:
        ap.error("--clients must be at least 1 and --seconds positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

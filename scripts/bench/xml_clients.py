#!/usr/bin/env python3
"""The two halves of scripts/xml-bench.sh (Python 3 standard library only).

  xml_clients.py gen DIR --containers N --mib M
      Writes N container directories c1..cN under DIR, each with M MiB of fresh random data
      in three files (var/lib/data/blob-*.bin) and a few hundred small files (srv/small/),
      plus etc/hostname and etc/os-release.

  xml_clients.py run --addr 127.0.0.1:PORT --cluster http://127.0.0.1:NODE --cairn-bin BIN
                     --containers DIR [options]
      Finds the environments (EIDs) with `BIN envs list --json`, backs every one up once over
      the XML API (so that `list` has something to return and `get_info` a backup to read),
      then, for the window, keeps a backup_env with progress="on" running on one more
      connection (back to back over the environments, changing a few bytes of one file of the
      container before each) while --connections client threads, each with its own TCP
      connection and login, alternate `list` (of a random EID) and `get_info` (of a random
      known backup) without pause. Prints connections, requests, rate, failures, latency
      percentiles, the backups and progress packets, then PASS or FAIL. Exit status 0 on
      PASS, 1 on FAIL, 2 when the run could not be made. The password of user admin comes
      from the environment variable CAIRN_DEV_PASSWORD.

The protocol: every packet, both ways, is one XML document followed by a NUL byte; answers
carry the request's packet id, progress packets (type="1") too; element names in answers are
namespaced (ns1:, ns2:) and are matched here by local name.

A request is *answered* when a final packet (not type="1") with its id arrives within
--timeout, parses as XML, has no `error` element, and has the expected content: for `list`
a `backupm` element holding only `backup` elements (each with an `id` of the listed EID);
for `get_info` an `info/env` whose `eid` is the backup's EID. Anything else (an `error`
answer, no answer within --timeout, a closed connection, an answer that does not parse) is
a failure. Latency is the wall clock (time.perf_counter) from sending the request to having
parsed its answer, so it includes the Python client's own overhead (GIL included).
"""

import base64
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import benchlib

SYSTEM_REALM = "00000000-0000-0000-0000-000000000000"

# ---------------------------------------------------------------------------------- packets


def b64(s):
    return base64.b64encode(s.encode()).decode()


def local(tag):
    """The local name of an ElementTree tag ('{uri}name' or 'name')."""
    return tag.rpartition("}")[2]


def child(el, name):
    if el is None:
        return None
    for c in el:
        if local(c.tag) == name:
            return c
    return None


def children(el, name):
    return [c for c in el if local(c.tag) == name] if el is not None else []


def text_of(el, name):
    c = child(el, name)
    return (c.text or "").strip() if c is not None else None


class Packet:
    """One received packet: its id, whether it is a progress packet, the element inside
    `data` (e.g. `backupm`, `system`, `progress`) and the errors it carries."""

    def __init__(self, raw):
        self.raw = raw
        root = ET.fromstring(raw)
        if local(root.tag) != "packet":
            raise ValueError(f"the root element is {local(root.tag)!r}, not packet")
        self.id = root.get("id")
        self.progress = root.get("type") == "1"
        data = child(root, "data")
        self.body = data[0] if data is not None and len(data) else None
        self.errors = []
        if self.body is not None:
            for e in self.body.iter():
                if local(e.tag) == "error":
                    self.errors.append((text_of(e, "code"), text_of(e, "message")))

    def error_text(self):
        return "; ".join(f"<error> code {c}: {m!r}" for c, m in self.errors)

    def head(self, n=300):
        return self.raw[:n].decode("utf-8", "replace")


def request(pid, body, interface="backupm", progress=False):
    attrs = f' version="4.0.0" id="{escape(pid)}"' + (' progress="on"' if progress else "")
    target = f"<target>{interface}</target>" if interface != "system" else ""
    return f"<packet{attrs}>{target}<data><{interface}>{body}</{interface}></data></packet>\0".encode()


def login_body(user, password):
    return (f"<login><name>{b64(user)}</name><realm>{SYSTEM_REALM}</realm>"
            f"<password>{b64(password)}</password></login>")


def list_body(eid):
    return f"<list><options><eid>{escape(eid)}</eid></options></list>"


def get_info_body(backup_id):
    return f"<get_info><backup_id>{escape(backup_id)}</backup_id><options><env/></options></get_info>"


def backup_env_body(eid):
    return f"<backup_env><env_list><eid>{escape(eid)}</eid></env_list></backup_env>"


# ---------------------------------------------------------------------------------- connection


class Closed(Exception):
    """The server closed the connection."""


class Timeout(Exception):
    """No (complete) answer before the deadline."""


class CallError(Exception):
    """An answer that is an error or not what was asked for."""


class XmlConn:
    """One TCP connection speaking NUL-framed XML packets; one request in flight at a time.
    Packets with another id than the one awaited (late answers to a request that timed out)
    are skipped and counted in `stray`."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.sock = None
        self.buf = b""
        self.stray = 0
        self.greeting = None

    def open(self, deadline):
        self.close()
        left = max(0.001, deadline - time.perf_counter())
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=left)
        except socket.timeout:
            raise Timeout(f"connect: no connection within {left:.1f} s") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.greeting = self.read_packet(deadline)
        if self.greeting.errors:
            raise CallError(f"greeting: {self.greeting.error_text()}")

    def login(self, user, password, deadline):
        p = self.call("login", login_body(user, password), deadline, interface="system")
        if p.errors:
            raise CallError(f"login: {p.error_text()}")
        if p.body is None or child(p.body, "token") is None:
            raise CallError(f"login: no token in the answer: {p.head()!r}")

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def read_packet(self, deadline):
        while True:
            nul = self.buf.find(b"\0")
            if nul >= 0:
                raw, self.buf = self.buf[:nul], self.buf[nul + 1:]
                if not raw.strip():
                    continue
                return Packet(raw)
            left = deadline - time.perf_counter()
            if left <= 0:
                raise Timeout("no answer")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(256 * 1024)
            except socket.timeout:
                raise Timeout("no answer") from None
            if not chunk:
                raise Closed("the server closed the connection"
                             + (f" ({len(self.buf)} bytes of an unfinished packet)" if self.buf else ""))
            self.buf += chunk

    def call(self, pid, body, deadline, interface="backupm", progress=False, on_progress=None):
        """Sends one request and returns its final answer; progress packets with its id go
        to on_progress (or are skipped)."""
        self.sock.sendall(request(pid, body, interface, progress))
        while True:
            p = self.read_packet(deadline)
            if p.id != pid:
                self.stray += 1
                continue
            if p.progress:
                if on_progress is not None:
                    on_progress(p)
                continue
            return p


def connect_and_login(host, port, user, password, timeout):
    conn = XmlConn(host, port)
    deadline = time.perf_counter() + timeout
    try:
        conn.open(deadline)
        conn.login(user, password, deadline)
    except BaseException:
        conn.close()
        raise
    return conn


def describe(e):
    if isinstance(e, Timeout):
        return str(e)
    if isinstance(e, (Closed, CallError)):
        return str(e)
    if isinstance(e, ET.ParseError):
        return f"an answer does not parse as XML: {e}"
    return repr(e)


# ---------------------------------------------------------------------------------- shared


class Pool:
    """The backup ids known to exist (seeded, then every backup the driver completes)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ids = []

    def add(self, bid):
        with self.lock:
            self.ids.append(bid)

    def pick(self, rng):
        with self.lock:
            return rng.choice(self.ids) if self.ids else None


class Env:
    def __init__(self, doc, cdir):
        self.eid = doc["eid"]
        self.name = doc.get("name") or self.eid
        path = doc.get("path") or ""
        # Only ever change files of the containers this run generated.
        self.dir = None
        if cdir and path:
            real, root = os.path.realpath(path), os.path.realpath(cdir)
            if real.startswith(root + os.sep):
                self.dir = real


class Backup:
    def __init__(self, env, pid, started):
        self.env, self.pid, self.started = env, pid, started
        self.ended = None
        self.id = None  # the backup id on success
        self.error = None  # what went wrong otherwise
        self.progress = []  # perf_counter of each progress packet


# ---------------------------------------------------------------------------------- driver


class Driver:
    """One connection running backup_env with progress="on", one at a time, back to back."""

    def __init__(self, host, port, user, password, envs, pool, touch, change_bytes, timeout, log):
        self.host, self.port, self.user, self.password = host, port, user, password
        self.envs, self.pool, self.touch, self.change_bytes = envs, pool, touch, change_bytes
        self.timeout, self.log = timeout, log
        self.conn = None
        self.backups = []
        self.errors = []  # (what, detail): connection trouble, changing files
        self.touched = 0
        self.seq = 0
        self.rng = random.Random()

    def ensure_conn(self):
        if self.conn is None:
            self.conn = connect_and_login(self.host, self.port, self.user, self.password, self.timeout)

    def back_up(self, env, deadline):
        """One backup_env of `env`, waiting for its answer until `deadline`."""
        self.seq += 1
        pid = f"backup-{self.seq}"
        b = Backup(env, pid, time.perf_counter())

        def on_progress(p):
            b.progress.append(time.perf_counter())

        try:
            self.ensure_conn()
            b.started = time.perf_counter()
            p = self.conn.call(pid, backup_env_body(env.eid), deadline, progress=True,
                               on_progress=on_progress)
            b.ended = time.perf_counter()
            if p.errors:
                b.error = p.error_text()
            else:
                backups = children(p.body, "backup")
                ids = [text_of(x, "id") for x in backups]
                good = [i for i in ids if i and i.startswith(env.eid + "/")]
                if good:
                    b.id = good[0]
                    self.pool.add(b.id)
                else:
                    b.error = f"no backup of {env.eid} in the answer: {p.head(400)!r}"
        except (Timeout, Closed, CallError, OSError, ET.ParseError, ValueError) as e:
            b.ended = time.perf_counter()
            b.error = describe(e)
            if self.conn is not None:
                self.conn.close()
                self.conn = None
        self.backups.append(b)
        return b

    def change_a_file(self, env):
        """New bytes in one big file of the container, so the next backup has something to
        upload."""
        if benchlib.change_a_file(env.dir, env.name, self.rng, self.change_bytes, self.errors):
            self.touched += 1

    def seed(self, per_backup_seconds):
        """Backs every environment up once (before the window); the backups made."""
        made = []
        for env in self.envs:
            b = self.back_up(env, time.perf_counter() + per_backup_seconds)
            if b.id is None:
                self.log(f"seed backup of {env.name} ({env.eid}) failed: {b.error}")
            else:
                made.append(b)
                self.log(f"seed backup of {env.name}: {b.id} in {b.ended - b.started:.1f} s, "
                         f"{len(b.progress)} progress packet(s)")
        return made

    def run(self, end, drain_seconds):
        """Until `end`: back up the environments in turn; the last one may finish after `end`
        (waited for up to drain_seconds)."""
        i = 0
        while time.perf_counter() < end:
            env = self.envs[i % len(self.envs)]
            i += 1
            if self.touch:
                self.change_a_file(env)
            b = self.back_up(env, end + drain_seconds)
            if b.error is not None and time.perf_counter() < end:
                time.sleep(min(1.0, max(0.0, end - time.perf_counter())))
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ---------------------------------------------------------------------------------- clients


class Client(threading.Thread):
    """One connection: logs in, then alternates list and get_info until the window ends."""

    def __init__(self, idx, host, port, user, password, eids, pool, timeout, ready, go, box):
        super().__init__(name=f"client-{idx}", daemon=True)
        self.idx, self.host, self.port = idx, host, port
        self.user, self.password = user, password
        self.eids, self.pool, self.timeout = eids, pool, timeout
        self.ready, self.go, self.box = ready, go, box
        self.rng = random.Random(idx)
        self.conn = None
        self.login_seconds = None
        self.setup_error = None
        self.latencies = {"list": [], "get_info": []}
        self.answered = 0
        self.failures = []  # (seconds into the window, what was asked, what went wrong)
        self.reconnects = 0
        self.stray = 0

    def setup(self):
        t0 = time.perf_counter()
        try:
            self.conn = connect_and_login(self.host, self.port, self.user, self.password, self.timeout)
            self.login_seconds = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - reported
            self.setup_error = describe(e)

    def run(self):
        self.setup()
        self.ready.release()
        self.go.wait()
        end, start = self.box[0], self.box[1]
        seq = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            if self.conn is None:
                try:
                    self.reconnects += 1
                    self.conn = connect_and_login(self.host, self.port, self.user, self.password,
                                                  self.timeout)
                except Exception as e:  # noqa: BLE001
                    self.failures.append((t0 - start, "connect and log in", describe(e)))
                    time.sleep(0.5)
                    continue
                t0 = time.perf_counter()
            seq += 1
            bid = self.pool.pick(self.rng) if seq % 2 == 0 else None
            if bid is None:
                kind, eid = "list", self.rng.choice(self.eids)
                asked, body = f"list {eid}", list_body(eid)
            else:
                kind = "get_info"
                asked, body = f"get_info {bid}", get_info_body(bid)
            pid = f"c{self.idx}-{seq}"
            what = None
            try:
                p = self.conn.call(pid, body, t0 + self.timeout)
                what = check_list(p, eid) if kind == "list" else check_info(p, bid)
            except Timeout:
                what = f"no answer within {self.timeout:g} s"
            except (Closed, OSError) as e:
                what = describe(e)
                self.stray += self.conn.stray
                self.conn.close()
                self.conn = None
            except (ET.ParseError, ValueError) as e:
                what = describe(e)
            t1 = time.perf_counter()
            self.latencies[kind].append(t1 - t0)
            if what is None:
                self.answered += 1
            else:
                self.failures.append((t0 - start, asked, what))
        if self.conn is not None:
            self.stray += self.conn.stray
            self.conn.close()
            self.conn = None


def check_list(p, eid):
    if p.errors:
        return p.error_text()
    if p.body is None or local(p.body.tag) != "backupm":
        return f"not a backupm answer: {p.head()!r}"
    for el in p.body:
        if local(el.tag) != "backup":
            return f"unexpected <{local(el.tag)}> in a list answer: {p.head()!r}"
        bid = text_of(el, "id") or ""
        if not bid.startswith(eid + "/"):
            return f"a listed backup id {bid!r} is not of {eid}"
    return None


def check_info(p, bid):
    if p.errors:
        return p.error_text()
    env = child(child(p.body, "info"), "env")
    if env is None:
        return f"no info/env in the get_info answer: {p.head()!r}"
    if text_of(env, "eid") != bid.partition("/")[0]:
        return f"info/env/eid {text_of(env, 'eid')!r} is not the EID of {bid}"
    return None


# ---------------------------------------------------------------------------------- envs


def discover(args, expect, deadline, log):
    """`cairn envs list --json` until at least `expect` environments show."""
    cmd = [args.cairn_bin, "envs", "list", "--json", "--cluster", args.cluster]

    def attempt():
        out = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
        if out.returncode != 0:
            return None, f"exit {out.returncode}: {out.stderr.decode(errors='replace').strip()[-300:]}"
        docs = json.loads(out.stdout)
        if len(docs) >= max(1, expect):
            return docs, None
        return None, f"{len(docs)} environment(s) so far, waiting for {expect}"

    return benchlib.retry(attempt, (OSError, ValueError, subprocess.TimeoutExpired), deadline, log,
                          f"could not list the environments with '{' '.join(cmd)}'")


# ---------------------------------------------------------------------------------- report


def run(args):
    password = benchlib.dev_password("xml-bench")
    if password is None:
        return 2
    m = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", args.addr)
    if not m:
        print(f"xml-bench: --addr {args.addr}: give HOST:PORT", file=sys.stderr)
        return 2
    host, port = m.group(1), int(m.group(2))

    log = benchlib.make_log("xml-bench")

    docs = discover(args, args.expect_envs, time.perf_counter() + 60, log)
    if not docs:
        return 2
    envs = [Env(d, args.containers) for d in docs]
    log(f"found {len(envs)} environment(s): " + ", ".join(f"{e.name}={e.eid}" for e in envs))

    pool = Pool()
    change_bytes = max(1, args.change_bytes)
    driver = Driver(host, port, args.user, password, envs, pool, not args.no_touch, change_bytes,
                    args.timeout, log)
    try:
        driver.ensure_conn()
    except Exception as e:  # noqa: BLE001
        log(f"could not connect to and log in to the XML API at {args.addr}: {describe(e)}")
        return 2
    log(f"logged in to the XML API at {args.addr}; backing up each environment once "
        "(the backups list and get_info read)")
    t_seed = time.perf_counter()
    seeded = driver.seed(args.drain_seconds)
    seed_seconds = time.perf_counter() - t_seed
    if not seeded:
        log("no seed backup succeeded: " + "; ".join(b.error or "?" for b in driver.backups[:3]))
        return 2
    seed_backups = list(driver.backups)
    driver.backups = []

    log(f"opening {args.connections} connection(s), each logging in as {args.user}")
    ready = threading.Semaphore(0)
    go = threading.Event()
    box = [0.0, 0.0]
    eids = [e.eid for e in envs]
    clients = [
        Client(i, host, port, args.user, password, eids, pool, args.timeout, ready, go, box)
        for i in range(args.connections)
    ]
    t_login = time.perf_counter()
    for c in clients:
        c.start()
    for _ in clients:
        ready.acquire()
    login_wall = time.perf_counter() - t_login
    setup_failed = [c for c in clients if c.setup_error is not None]
    if len(setup_failed) == len(clients):
        log(f"no connection could log in: {setup_failed[0].setup_error}")
        go.set()
        return 2
    log(f"{len(clients) - len(setup_failed)} connection(s) logged in in {login_wall:.1f} s; "
        f"window of {args.seconds:g} s starts")

    start = time.perf_counter()
    end = start + args.seconds
    box[0], box[1] = end, start
    go.set()
    driver.run(end, args.drain_seconds)
    # Clients finish the request they have in flight (bounded by --timeout).
    for c in clients:
        c.join(max(0.1, end + args.timeout + 5 - time.perf_counter()))
    stuck = sum(c.is_alive() for c in clients)
    window_end = time.perf_counter()

    # ------------------------------------------------------------------ numbers
    lat = {k: sorted(x for c in clients for x in c.latencies[k]) for k in ("list", "get_info")}
    every = sorted(lat["list"] + lat["get_info"])
    total = len(every)
    answered = sum(c.answered for c in clients)
    failures = sorted((f for c in clients for f in c.failures), key=lambda f: f[0])
    p99 = benchlib.pct(every, 99) * 1000.0
    over_1s = sum(1 for x in every if x > 1.0)
    silent = [c for c in clients if c.answered == 0]
    fewest = min(c.answered for c in clients)
    logins = sorted(c.login_seconds for c in clients if c.login_seconds is not None)
    stray = sum(c.stray for c in clients)
    reconnects = sum(c.reconnects for c in clients)

    in_window = driver.backups  # every backup the driver started during the window
    ok = [b for b in in_window if b.id is not None]
    ok_by_end = [b for b in ok if b.ended <= end]
    bad = [b for b in in_window if b.id is None]
    progress_all = sum(len(b.progress) for b in in_window)
    progress_window = sum(1 for b in in_window for t in b.progress if start <= t <= end)
    durations = sorted(b.ended - b.started for b in ok)
    busy = benchlib.busy_fraction(in_window, start, end)

    print()
    print("== xml-bench: list/get_info over the XML API while backups report progress ==")
    print(f"connections           {args.connections} (one TCP connection and login each, one request "
          "in flight, no pause between requests)")
    if logins:
        print(f"logins                {len(logins)} in {login_wall:.1f} s before the window "
              f"(each: median {benchlib.pct(logins, 50) * 1000:.0f} ms, max {logins[-1] * 1000:.0f} ms)"
              + (f"; {len(setup_failed)} failed, first: {setup_failed[0].setup_error}" if setup_failed else ""))
    print(f"environments          {len(envs)}; seed backups {len(seeded)} of {len(envs)} "
          f"in {seed_seconds:.1f} s before the window")
    print(f"window                {window_end - start:.1f} s ({args.seconds:g} s requested); "
          f"a backup running during {busy * 100:.0f}% of it")
    print(f"requests              {total} (list {len(lat['list'])}, get_info {len(lat['get_info'])})")
    print(f"requests/s            {total / (window_end - start) if window_end > start else 0:.1f}")
    print(f"failures              {len(failures)}"
          + (f"  (+{stuck} connection(s) still waiting at the end)" if stuck else "")
          + (f"; {reconnects} reconnect(s)" if reconnects else ""))
    print(f"latency ms            {benchlib.latency_line(every)}")
    print(f"  list                {benchlib.latency_line(lat['list'])}")
    print(f"  get_info            {benchlib.latency_line(lat['get_info'])}")
    print(f"requests over 1 s     {over_1s}")
    print(f"answers/connection    min {fewest}, max {max(c.answered for c in clients)}"
          + (f"; {len(silent)} connection(s) got no answer" if silent else "; every connection answered"))
    if stray:
        print(f"stray packets         {stray} (answers to requests that had timed out)")
    print(f"backups started       {len(in_window)} during the window, one at a time on one more connection"
          + (f" ({driver.touched} after changing {change_bytes} bytes of one file)" if driver.touched else ""))
    distinct = len({b.id for b in ok})
    print(f"backups completed     {len(ok)} ({len(ok_by_end)} by the end of the window, "
          f"{len(ok) - len(ok_by_end)} after it)"
          + (f"; only {distinct} distinct backup ids among them" if distinct < len(ok) else ""))
    benchlib.print_durations(durations, "request sent to final answer")
    print(f"progress packets      {progress_all} received ({progress_window} during the window)")
    if bad:
        print(f"backups failed        {len(bad)}:")
        for b in bad[:5]:
            print(f"  {b.env.name} ({b.pid}, after {b.ended - b.started:.1f} s): {b.error}")
    else:
        print("backups failed        none")
    benchlib.print_firsts(failures, driver.errors)
    bad_seed = [b for b in seed_backups if b.id is None]
    if bad_seed:
        print(f"seed backups failed   {len(bad_seed)} (before the window)")

    limit = args.p99_ms
    problems = benchlib.request_problems(total, len(failures) + stuck)
    if setup_failed:
        problems.append(f"{len(setup_failed)} connection(s) could not log in before the window")
    if silent:
        problems.append(f"{len(silent)} connection(s) got no answer")
    if not p99 <= limit:
        problems.append(f"p99 {p99:.1f} ms > {limit:g} ms")
    if not ok:
        problems.append("no backup completed")
    if progress_window == 0:
        problems.append("no progress packet arrived during the window")
    return benchlib.verdict(problems, f"PASS: {total} requests on {args.connections} connections all answered, "
                            f"p99 {p99:.1f} ms <= {limit:g} ms, {len(ok)} backup(s) completed with "
                            f"{progress_all} progress packet(s)")


def main():
    ap, sub = benchlib.parser(__doc__)
    r = sub.add_parser("run", help="measure")
    r.add_argument("--addr", required=True, help="the XML API, e.g. 127.0.0.1:4433")
    r.add_argument("--cluster", required=True, help="a node, e.g. http://127.0.0.1:7700 (to list the environments)")
    r.add_argument("--cairn-bin", required=True, help="the cairn binary (runs `envs list --json`)")
    r.add_argument("--user", default="admin")
    r.add_argument("--containers", help="the container directory (to change a file between backups)")
    r.add_argument("--connections", type=int, default=100)
    r.add_argument("--seconds", type=float, default=30.0)
    r.add_argument("--timeout", type=float, default=10.0, help="a request unanswered this long fails")
    r.add_argument("--expect-envs", type=int, default=1, help="wait until at least this many environments show")
    r.add_argument("--drain-seconds", type=float, default=300.0,
                   help="how long one backup may take (seed backups, and the one running at the end)")
    r.add_argument("--p99-ms", type=float, default=1000.0)
    r.add_argument("--no-touch", action="store_true", help="re-back up unchanged trees")
    r.add_argument("--change-bytes", type=int, default=64,
                   help="bytes of new random data written into one file before each backup")
    args = ap.parse_args()
    if args.cmd == "gen":
        return benchlib.gen(args, "xml-bench")
    if args.connections < 1 or args.seconds <= 0:
        ap.error("--connections must be at least 1 and --seconds positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

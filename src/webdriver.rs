//! A small blocking WebDriver client for the browser tests: it starts `chromedriver` on a
//! free port, opens one headless Chromium session and speaks the W3C WebDriver protocol
//! (JSON over HTTP) through [`crate::http`], so the tests need no browser-automation crate.
//!
//! Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`;
//! `.ci/run` installs them). A missing browser is a failure, never a skipped test:
//! [`Browser::start`] panics saying what to install. `CHROMEDRIVER` and `CHROMIUM` override
//! the paths.
//!
//! Every lookup that waits ([`Browser::find`], [`Browser::wait_for`]) has a deadline; nothing
//! sleeps and hopes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::http;

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::find`] waits for an element to appear.
const FIND_TIMEOUT: Duration = Duration::from_secs(10);

/// One headless Chromium session, driven through its own `chromedriver`. Dropping it ends
/// the session and stops the driver.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
    css: String,
}

fn locate(var: &str, candidates: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "the browser tests need Chromium and chromedriver: install them with \
                 `apt-get install chromium chromium-driver` (or set {var}); looked for {candidates:?}"
            )
        })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` × `height` pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        let driver_bin = locate(
            "CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        );
        let chromium = locate(
            "CHROMIUM",
            &["/usr/lib/chromium/chromium", "/usr/bin/chromium"],
        );
        let port = crate::free_ports(1)[0];
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
        };
        crate::wait_for(Duration::from_secs(20), "chromedriver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            let v = b.call("GET", "/status", None).ok()?;
            v["ready"].as_bool().filter(|r| *r)
        });
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.to_string_lossy(),
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--no-first-run",
                        format!("--window-size={width},{height}"),
                    ],
                },
            }}
        });
        let v = b
            .call("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("chromedriver did not open a session: {e}"));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b.cmd("POST", "/timeouts", Some(json!({ "script": 60_000 })));
        b.resize(width, height);
        b
    }

    /// One WebDriver call: the answer's `value`, or the driver's error as text.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = exchange(&self.base, method, path, &bytes)?;
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("status {}: not JSON ({e}): {}", r.status, r.text()))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if r.status >= 400 || value.get("error").is_some_and(|e| e.is_string()) {
            return Err(format!(
                "{}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"].as_str().unwrap_or_default()
            ));
        }
        Ok(value)
    }

    /// A call on this session that must succeed.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.call(method, &full, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn element(&self, v: &Value, css: &str) -> Element<'_> {
        Element {
            browser: self,
            id: v[ELEMENT]
                .as_str()
                .expect("an element reference")
                .to_string(),
            css: css.to_string(),
        }
    }

    fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let path = format!("/session/{}/element", self.session);
        let v = self
            .call(
                "POST",
                &path,
                Some(json!({ "using": "css selector", "value": css })),
            )
            .ok()?;
        Some(self.element(&v, css))
    }

    /// The first element matching `css`, waiting up to 10 s for it to appear.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.wait_for(FIND_TIMEOUT, &format!("an element {css:?}"), |b| {
            b.try_find(css)
        })
    }

    /// Presses `keys` (WebDriver key codes: `"\u{E004}"` Tab, `"\u{E007}"` Enter) in the
    /// focused element, the page's body when nothing has focus: what a keyboard user does.
    pub fn press(&self, keys: &str) {
        let v = self.cmd("GET", "/element/active", None);
        self.element(&v, "the focused element").type_text(keys);
    }

    /// Every element matching `css` now (no waiting).
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_array()
            .map(|a| a.iter().map(|e| self.element(e, css)).collect())
            .unwrap_or_default()
    }

    /// Whether an element matches `css` now (no waiting).
    pub fn exists(&self, css: &str) -> bool {
        !self.find_all(css).is_empty()
    }

    /// Polls `f` until it returns `Some`; panics with `what` (and saves a screenshot of the
    /// page under `target/ui-screenshots/`) after `timeout`.
    pub fn wait_for<'b, T>(
        &'b self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&'b Browser) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if std::time::Instant::now() > deadline {
                let shot = screenshot_dir().join("timeout.png");
                self.screenshot(&shot);
                panic!(
                    "timed out waiting for {what} on {} (screenshot: {})",
                    self.url(),
                    shot.display()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Runs `js` in the page (its `arguments` are `args`) and returns what it returns.
    pub fn run(&self, js: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": args })),
        )
    }

    fn run_async(&self, js: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({ "script": js, "args": args })),
        )
    }

    /// Fetches `url` from inside the page (with its cookies): the status and the body.
    pub fn fetch_bytes(&self, url: &str) -> (u16, Vec<u8>) {
        let v = self.run_async(
            r#"const [url, done] = arguments;
fetch(url, { credentials: 'same-origin' }).then(async (r) => {
  const b = new Uint8Array(await r.arrayBuffer());
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  }
  done([r.status, btoa(s)]);
}).catch((e) => done([0, btoa(String(e))]));"#,
            vec![json!(url)],
        );
        decode_answer(&v)
    }

    /// POSTs `fields` as a form from inside the page (with its cookies, following
    /// redirects): the final status and body text.
    pub fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let pairs: Vec<Value> = fields.iter().map(|(k, v)| json!([k, v])).collect();
        let v = self.run_async(
            r#"const [url, pairs, done] = arguments;
fetch(url, { method: 'POST', credentials: 'same-origin', body: new URLSearchParams(pairs) })
  .then(async (r) => done([r.status, btoa(unescape(encodeURIComponent(await r.text())))]))
  .catch((e) => done([0, btoa(String(e))]));"#,
            vec![json!(url), Value::Array(pairs)],
        );
        let (status, body) = decode_answer(&v);
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Saves a PNG of the visible page at `path` (creating its directory).
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// The current page's HTML.
    pub fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Resizes the window to `width` × `height` pixels.
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }
}

/// One request to chromedriver. Its server keeps connections open whatever the request
/// says, so the answer is read up to its `Content-Length`, not to the end of the stream.
fn exchange(base: &str, method: &str, path: &str, body: &[u8]) -> Result<http::Resp, String> {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes())
        .and_then(|_| tcp.write_all(body))
        .map_err(|e| format!("write to chromedriver: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if len.is_some_and(|n| raw.len() >= end + 4 + n) {
                break;
            }
        }
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read from chromedriver: {e}")),
        }
    }
    http::parse(&raw)
        .ok_or_else(|| format!("not an HTTP answer: {}", String::from_utf8_lossy(&raw)))
}

/// `[status, base64 body]` as the page scripts answer.
fn decode_answer(v: &Value) -> (u16, Vec<u8>) {
    let status = v[0].as_u64().unwrap_or(0) as u16;
    let body = base64::engine::general_purpose::STANDARD
        .decode(v[1].as_str().unwrap_or_default())
        .expect("base64 from the page");
    (status, body)
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Element<'_> {
    fn path(&self, tail: &str) -> String {
        format!("/element/{}{tail}", self.id)
    }

    /// The element's rendered text.
    pub fn text(&self) -> String {
        self.browser
            .cmd("GET", &self.path("/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn click(&self) {
        self.browser
            .cmd("POST", &self.path("/click"), Some(json!({})));
    }

    /// Types `s` into the element (an input or textarea).
    pub fn type_text(&self, s: &str) {
        self.browser
            .cmd("POST", &self.path("/value"), Some(json!({ "text": s })));
    }

    pub fn clear(&self) {
        self.browser
            .cmd("POST", &self.path("/clear"), Some(json!({})));
    }

    /// The attribute's value, `None` when it is absent.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.browser
            .cmd("GET", &self.path(&format!("/attribute/{name}")), None)
            .as_str()
            .map(str::to_string)
    }

    /// The first element under this one matching `css`, waiting up to 10 s.
    pub fn find(&self, css: &str) -> Element<'_> {
        let b = self.browser;
        b.wait_for(
            FIND_TIMEOUT,
            &format!("an element {css:?} under {:?}", self.css),
            |b| {
                let v = b
                    .call(
                        "POST",
                        &format!("/session/{}{}", b.session, self.path("/element")),
                        Some(json!({ "using": "css selector", "value": css })),
                    )
                    .ok()?;
                Some(b.element(&v, css))
            },
        )
    }

    /// Whether the element is shown.
    pub fn displayed(&self) -> bool {
        self.browser
            .cmd("GET", &self.path("/displayed"), None)
            .as_bool()
            .unwrap_or(false)
    }
}

/// Where browser tests save screenshots: `target/ui-screenshots/` of this workspace (or of
/// `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ui-screenshots")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client against a page of its own: lookups, typing, scripts, in-page fetches and
    /// screenshots work (the dashboard test in `tests/ui.rs` relies on each).
    #[test]
    fn drives_a_real_browser() {
        let b = Browser::start(800, 600);
        b.goto(
            "data:text/html,<title>t</title><p id=a>hello</p>\
             <input id=i><button id=btn onclick=\"document.getElementById('a').textContent='clicked'\">go</button>",
        );
        assert_eq!(b.find("#a").text(), "hello");
        assert!(b.exists("#btn") && !b.exists("#nothing"));
        b.find("#i").type_text("typed");
        assert_eq!(
            b.run("return document.getElementById('i').value", vec![]),
            "typed"
        );
        b.find("#btn").click();
        b.wait_for(Duration::from_secs(5), "the click's effect", |b| {
            (b.find("#a").text() == "clicked").then_some(())
        });
        assert_eq!(b.run("return arguments[0] + 1", vec![json!(41)]), 42);
        let (status, body) = b.fetch_bytes("data:application/octet-stream;base64,AAEC/w==");
        assert_eq!((status, body), (200, vec![0, 1, 2, 255]));
        let shot = std::env::temp_dir().join(format!("wd-{}.png", std::process::id()));
        b.screenshot(&shot);
        let png = std::fs::read(&shot).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let _ = std::fs::remove_file(shot);
    }
}

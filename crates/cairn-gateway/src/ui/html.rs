//! HTML building for the dashboard: escaping, the page frame, and small formatters.
//!
//! # Invariants
//! - Every value that did not come from this file's own literals goes through [`esc`] (text
//!   and attribute values alike: it escapes `& < > " '`), and every value put into a URL
//!   goes through [`enc`] first. Pages are built by string concatenation, so these two
//!   functions are the whole defence against markup injection from names, paths and
//!   messages; their unit tests pin them.
//! - [`frame`] is the only place the page skeleton (skip link, navigation, sign-out form
//!   with its CSRF field, the CSRF token for scripts in a `<meta>`) is written.
//! - [`Pager`] renders at most one page of a list; its links carry `page=`.

use std::fmt::Write;

use cairn_core::auth::Role;

/// Escapes text for HTML content and for quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a value for a URL query or path segment (everything but unreserved).
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ENC).to_string()
}

const ENC: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Who sees the page, for the frame.
pub struct Viewer<'a> {
    pub user: &'a str,
    pub role: Role,
    pub csrf: &'a str,
}

/// The navigation entries: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/ui/", "Overview"),
    ("/ui/hosts", "Hosts"),
    ("/ui/jobs", "Jobs"),
    ("/ui/nodes", "Nodes"),
];

/// A whole page: head, skip link, navigation (with `active` marked), `body` in `<main>`.
pub fn frame(title: &str, active: &str, who: Option<&Viewer>, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 2048);
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(h, "<title>{} · Cairn</title>", esc(title));
    if let Some(w) = who {
        let _ = write!(h, "<meta name=\"csrf-token\" content=\"{}\">", esc(w.csrf));
    }
    h.push_str("<link rel=\"stylesheet\" href=\"/ui/assets/app.css\">");
    h.push_str("<script src=\"/ui/assets/app.js\" defer></script></head><body>");
    h.push_str("<a class=\"skip\" href=\"#main\">Skip to content</a>");
    h.push_str("<header class=\"top\"><a class=\"brand\" href=\"/ui/\">Cairn</a>");
    if let Some(w) = who {
        h.push_str("<nav aria-label=\"Main\"><ul>");
        for (path, label) in NAV {
            let current = if *path == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(h, "<li><a href=\"{path}\"{current}>{label}</a></li>");
        }
        h.push_str("</ul></nav>");
        let _ = write!(
            h,
            "<form class=\"signout\" method=\"post\" action=\"/ui/logout\"><span class=\"who\">{} ({})</span>{}<button type=\"submit\">Sign out</button></form>",
            esc(w.user),
            w.role,
            csrf_field(w.csrf)
        );
    }
    h.push_str("</header>");
    let _ = write!(
        h,
        "<main id=\"main\" tabindex=\"-1\"><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    h
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

/// A form with one button that POSTs to `action` (with the CSRF field and `fields`).
pub fn button_form(
    action: &str,
    label: &str,
    csrf: &str,
    fields: &[(&str, &str)],
    class: &str,
) -> String {
    let mut h = format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\">{}",
        esc(action),
        csrf_field(csrf)
    );
    for (k, v) in fields {
        let _ = write!(
            h,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(k),
            esc(v)
        );
    }
    let _ = write!(
        h,
        "<button type=\"submit\" class=\"{}\">{}</button></form>",
        esc(class),
        esc(label)
    );
    h
}

/// Bytes for people: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A past instant's age for people: `5 s`, `3 min`, `2 h`, `4 d` (`—` for none).
pub fn ago(then_ms: i64, now_ms: i64) -> String {
    if then_ms <= 0 {
        return "—".into();
    }
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A UTC time for people: `2026-12-07 12:00:00`.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "—".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "—".into())
}

/// Unix permission bits as `rwxr-xr-x` (with setuid, setgid and sticky shown).
pub fn mode(m: u32) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, on, off) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, m & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// One page of a list: which items it shows and the links to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pager {
    /// 1-based.
    pub page: usize,
    pub per_page: usize,
    pub total: usize,
}

impl Pager {
    /// The page asked for, clamped to the pages there are.
    pub fn new(asked: Option<usize>, per_page: usize, total: usize) -> Pager {
        let per_page = per_page.max(1);
        let pages = total.div_ceil(per_page).max(1);
        Pager {
            page: asked.unwrap_or(1).clamp(1, pages),
            per_page,
            total,
        }
    }

    pub fn pages(&self) -> usize {
        self.total.div_ceil(self.per_page).max(1)
    }

    /// The indices of this page's items.
    pub fn range(&self) -> std::ops::Range<usize> {
        let start = (self.page - 1) * self.per_page;
        start.min(self.total)..(start + self.per_page).min(self.total)
    }

    /// Previous/next links; `base` is the URL with its other query parameters, ending in
    /// `?` or `&`.
    pub fn nav(&self, base: &str) -> String {
        if self.pages() <= 1 {
            return String::new();
        }
        let mut h = String::from("<nav class=\"pager\" aria-label=\"Pages\">");
        if self.page > 1 {
            let _ = write!(
                h,
                "<a rel=\"prev\" href=\"{}page={}\">← Previous</a>",
                esc(base),
                self.page - 1
            );
        }
        let _ = write!(
            h,
            "<span>Page {} of {} ({} items)</span>",
            self.page,
            self.pages(),
            self.total
        );
        if self.page < self.pages() {
            let _ = write!(
                h,
                "<a rel=\"next\" href=\"{}page={}\">Next →</a>",
                esc(base),
                self.page + 1
            );
        }
        h.push_str("</nav>");
        h
    }
}

/// A progress bar for a job, updated live by the page's script (`data-job`).
pub fn progress(job: &str, percent: u32, state: &str) -> String {
    let p = percent.min(100);
    format!(
        "<span class=\"prog\"><progress data-job=\"{j}\" data-state=\"{s}\" max=\"100\" value=\"{p}\" aria-label=\"progress\">{p}%</progress> <span data-job-pct=\"{j}\">{p}%</span></span>",
        j = esc(job),
        s = esc(state)
    )
}

/// A job's log as a list the page's script replaces on each live update (`data-job-log`):
/// one item per line with its time, level and text. A job recorded before jobs had logs
/// shows its reason and result instead.
pub fn job_log(id: &str, j: &cairn_core::job::Job) -> String {
    let mut h = format!("<ol class=\"log\" data-job-log=\"{}\">", esc(id));
    for (n, l) in j.log.iter().enumerate() {
        if n == 1 && j.log_dropped > 0 {
            let _ = write!(
                h,
                "<li class=\"muted\">… {} earlier line(s) dropped</li>",
                j.log_dropped
            );
        }
        let _ = write!(
            h,
            "<li class=\"{0}\"><time>{1}</time> <span class=\"level\">{0}</span> <span class=\"text\">{2}</span></li>",
            l.level.as_str(),
            time(l.at_ms),
            esc(&l.text)
        );
    }
    if j.log.is_empty() {
        let mut lines = Vec::new();
        if !j.reason.is_empty() {
            lines.push(match j.code {
                Some(code) => format!("{} [{code}]", j.reason),
                None => j.reason.clone(),
            });
        }
        if !j.result.message.is_empty() {
            lines.push(j.result.message.clone());
        }
        if lines.is_empty() {
            lines.push("nothing recorded yet".into());
        }
        for l in lines {
            let _ = write!(h, "<li><span class=\"text\">{}</span></li>", esc(&l));
        }
    }
    h.push_str("</ol>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(esc("plain näme"), "plain näme");
        assert_eq!(esc(""), "");
        // Already-escaped text is escaped again, never trusted.
        assert_eq!(esc("&amp;"), "&amp;amp;");
    }

    #[test]
    fn url_values_are_percent_encoded() {
        assert_eq!(enc("etc/host name"), "etc%2Fhost%20name");
        assert_eq!(enc("a&b=c?d#e"), "a%26b%3Dc%3Fd%23e");
        assert_eq!(enc("ok-._~"), "ok-._~");
        assert_eq!(enc("é"), "%C3%A9");
    }

    #[test]
    fn the_frame_escapes_what_it_is_given() {
        let w = Viewer {
            user: "<b>",
            role: Role::Viewer,
            csrf: "t\"ok",
        };
        let page = frame("A <title>", "/ui/", Some(&w), "<p>body</p>");
        assert!(page.contains("A &lt;title&gt;"));
        assert!(page.contains("&lt;b&gt; (viewer)"));
        assert!(page.contains("value=\"t&quot;ok\""));
        assert!(page.contains("href=\"#main\""), "a skip link");
        assert!(page.contains("<a href=\"/ui/\" aria-current=\"page\">Overview</a>"));
        assert!(!frame("x", "/ui/", None, "").contains("Sign out"));
    }

    #[test]
    fn pagination_shows_one_page() {
        let p = Pager::new(Some(2), 10, 25);
        assert_eq!(p.range(), 10..20);
        assert_eq!(p.pages(), 3);
        let nav = p.nav("/ui/hosts?q=a&amp;");
        assert!(nav.contains("page=1") && nav.contains("page=3"), "{nav}");
        // Out of range asks are clamped; an empty list is one empty page.
        assert_eq!(Pager::new(Some(9), 10, 25).range(), 20..25);
        assert_eq!(Pager::new(Some(0), 10, 25).range(), 0..10);
        assert_eq!(Pager::new(None, 10, 0).range(), 0..0);
        assert_eq!(Pager::new(None, 10, 0).nav("/x?"), "");
        let big = Pager::new(Some(1000), 25, 10_000);
        assert_eq!(big.range(), 9975..10_000);
    }

    #[test]
    fn formatters() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(ago(1_000, 62_000), "1 min ago");
        assert_eq!(ago(0, 5), "—");
        assert_eq!(time(0), "—");
        assert_eq!(time(86_400_000), "1970-01-02 00:00:00");
        assert_eq!(mode(0o755), "rwxr-xr-x");
        assert_eq!(mode(0o4755), "rwsr-xr-x");
        assert_eq!(mode(0o1777), "rwxrwxrwt");
        assert_eq!(mode(0o640), "rw-r-----");
        let bar = progress("j\"1", 140, "running");
        assert!(bar.contains("value=\"100\"") && bar.contains("j&quot;1"));
    }

    #[test]
    fn a_jobs_log_is_escaped_and_says_what_was_dropped() {
        use cairn_core::job::{Job, JobKind, JobOptions, LogLevel};
        let env = cairn_core::EnvId::derive("h1/ct");
        let mut j = Job::new(
            uuid::Uuid::from_u128(1),
            JobKind::Backup,
            env,
            "h1".into(),
            "ui:<b>".into(),
            JobOptions::default(),
            1_700_000_000_000,
            0,
        );
        j.log(
            1_700_000_001_000,
            LogLevel::Error,
            "failed [E1018]: <script>",
        );
        j.log_dropped = 4;
        let h = job_log("id1", &j);
        assert!(
            h.starts_with("<ol class=\"log\" data-job-log=\"id1\">"),
            "{h}"
        );
        assert!(h.contains("asked by ui:&lt;b&gt;"), "{h}");
        assert!(
            h.contains("<li class=\"muted\">… 4 earlier line(s) dropped</li>"),
            "{h}"
        );
        assert!(
            h.contains("<li class=\"error\"><time>2023-11-14 22:13:21</time> <span class=\"level\">error</span> <span class=\"text\">failed [E1018]: &lt;script&gt;</span></li>"),
            "{h}"
        );
        // A job recorded before jobs had logs shows its reason.
        j.log.clear();
        j.reason = "lost".into();
        assert!(job_log("id1", &j).contains("<span class=\"text\">lost</span>"));
    }
}

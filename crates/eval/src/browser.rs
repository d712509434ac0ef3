//! Opening a report in headless Chromium, for tests that check the plots
//! render (non-empty bounding boxes after layout), not only that the SVG text
//! is there.

/// Chromium, if installed (Debian's `chromium` package).
pub fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// Opens a report in headless Chromium and returns the `data-svg-rendered`
/// mark its script sets after layout: `(plots with a non-empty bounding
/// box and marks, plots)`.
pub fn rendered_plots(html: &str) -> Option<(usize, usize)> {
    let Some(chrome) = chromium() else {
        assert!(
            std::env::var_os("INSTRUCTGPT_REQUIRE_CHROMIUM").is_none(),
            "INSTRUCTGPT_REQUIRE_CHROMIUM is set but chromium is not installed (apt-get install chromium)"
        );
        eprintln!("skipping the browser check: chromium is not installed (apt-get install chromium)");
        return None;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("instructgpt-report-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, html).unwrap();
    let out = std::process::Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let dom = String::from_utf8_lossy(&out.stdout);
    let mark = dom.split("data-svg-rendered=\"").nth(1).and_then(|r| r.split('"').next());
    let mark = mark.unwrap_or_else(|| {
        panic!("no render mark in the DOM; chromium said:\n{}", String::from_utf8_lossy(&out.stderr))
    });
    let (ok, total) = mark.split_once('/').unwrap();
    Some((ok.parse().unwrap(), total.parse().unwrap()))
}

//! Progress bars as periodic log lines when stderr is not a terminal.
//!
//! indicatif draws nothing when stderr is a file or a pipe (CI, `nohup`, `tee`), so a step that
//! trains for a quarter of an hour would be silent until it ends. [`LogLines`] is a draw target that
//! collects each redraw's bar lines and logs them at most once per interval, and only when they
//! changed: a log file gets a line such as `sft_tiny sft  [=====>   ] 410/1320 7.1/s eta 2m` every
//! 30 seconds instead of nothing.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::TermLike;

/// Seconds between progress lines in a log (`INSTRUCTGPT_PROGRESS_EVERY`; 0 turns them off).
pub const ENV_INTERVAL: &str = "INSTRUCTGPT_PROGRESS_EVERY";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// The interval from the environment: `None` when progress lines are turned off.
pub fn interval_from_env() -> Option<Duration> {
    match std::env::var(ENV_INTERVAL) {
        Err(_) => Some(DEFAULT_INTERVAL),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
            Ok(_) => None,
            Err(_) => {
                tracing::warn!("{ENV_INTERVAL}={v:?} is not a number of seconds; using 30");
                Some(DEFAULT_INTERVAL)
            }
        },
    }
}

type Sink = Box<dyn Fn(&str) + Send + Sync>;

/// A draw target that turns redraws into rate-limited log lines.
pub struct LogLines {
    interval: Duration,
    sink: Sink,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The lines of the redraw in progress.
    frame: Vec<String>,
    /// The last lines logged, and when.
    shown: Vec<String>,
    at: Option<Instant>,
}

impl LogLines {
    /// Logs through `tracing` at INFO.
    pub fn new(interval: Duration) -> LogLines {
        LogLines::with_sink(interval, Box::new(|line| tracing::info!("{line}")))
    }

    pub fn with_sink(interval: Duration, sink: Sink) -> LogLines {
        LogLines { interval, sink, state: Mutex::new(State::default()) }
    }
}

impl std::fmt::Debug for LogLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLines").field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl TermLike for LogLines {
    // Wide and tall enough that indicatif neither wraps nor drops a bar.
    fn width(&self) -> u16 {
        1000
    }
    fn height(&self) -> u16 {
        1000
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(s)
    }
    /// indicatif writes each bar's line with one call, then padding and carriage returns.
    fn write_str(&self, s: &str) -> io::Result<()> {
        let line = s.trim();
        if !line.is_empty() {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).frame.push(line.to_string());
        }
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }
    /// The end of a redraw: log its lines if the interval has passed and they changed.
    fn flush(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let frame = std::mem::take(&mut st.frame);
        let due = st.at.is_none_or(|t| t.elapsed() >= self.interval);
        if frame.is_empty() || !due || frame == st.shown {
            return Ok(());
        }
        for line in &frame {
            (self.sink)(line);
        }
        st.shown = frame;
        st.at = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn recorder(interval: Duration) -> (LogLines, Arc<Mutex<Vec<String>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        (LogLines::with_sink(interval, Box::new(move |l| g.lock().unwrap().push(l.to_string()))), got)
    }

    fn draw(t: &LogLines, lines: &[&str]) {
        t.write_str("\r").unwrap();
        for l in lines {
            t.write_str(l).unwrap();
            t.write_str("      ").unwrap();
        }
        t.flush().unwrap();
    }

    #[test]
    fn logs_each_changed_redraw_once_and_skips_padding() {
        let (t, got) = recorder(Duration::ZERO);
        draw(&t, &["a [=> ] 1/4", "b [>  ] 0/2"]);
        draw(&t, &["a [=> ] 1/4", "b [>  ] 0/2"]);
        draw(&t, &["a [==>] 2/4"]);
        assert_eq!(*got.lock().unwrap(), vec!["a [=> ] 1/4", "b [>  ] 0/2", "a [==>] 2/4"]);
    }

    #[test]
    fn rate_limits_to_the_interval() {
        let (t, got) = recorder(Duration::from_secs(3600));
        draw(&t, &["x 1/9"]);
        draw(&t, &["x 2/9"]);
        draw(&t, &["x 3/9"]);
        assert_eq!(*got.lock().unwrap(), vec!["x 1/9"]);
    }
}

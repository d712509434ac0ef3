//! Progress bars as periodic log lines when stderr is not a terminal.
//!
//! indicatif draws nothing when stderr is a file or a pipe (CI, `nohup`, `tee`), so a step that
//! trains for a quarter of an hour would be silent until it ends. [`LogLines`] is a draw target that
//! collects each redraw's lines (one per bar: the pipeline's, then the running stage's) and logs a
//! redraw when the interval has passed since the last one logged, or at once when a bar appears or
//! goes away. When a bar goes away, the redraw held back before it is logged first, so a finished
//! bar's last drawn count is never lost. A log gets, every 30 seconds,
//!
//! ```text
//! pipeline default [====>        ] 4/25 steps  sft_tiny
//! loss 2.113                   [=======>      ] 410/1320 7.1/s eta 2m
//! ```

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
            Ok(s) if s <= 0.0 => None,
            Ok(s) if let Ok(d) = Duration::try_from_secs_f64(s) => Some(d),
            _ => {
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
    /// The newest redraw not logged (it came within the interval).
    pending: Option<Vec<String>>,
}

impl State {
    fn log(&mut self, frame: Vec<String>, sink: &Sink) {
        if frame != self.shown {
            frame.iter().for_each(|l| sink(l));
            self.shown = frame;
            self.at = Some(Instant::now());
        }
    }
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
    /// indicatif writes each bar's line with one call, then padding and carriage returns. Styles
    /// follow stdout's colour setting, so a log of stderr may be sent escape codes: dropped.
    fn write_str(&self, s: &str) -> io::Result<()> {
        let line = console::strip_ansi_codes(s);
        let line = line.trim();
        if !line.is_empty() {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).frame.push(line.to_string());
        }
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }
    /// The end of a redraw: log it if the interval has passed, or if a bar appeared or went away
    /// (when one went away, the redraw held back before it first); else hold it back.
    fn flush(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let frame = std::mem::take(&mut st.frame);
        let due = st.at.is_none_or(|t| t.elapsed() >= self.interval);
        let bars_changed = frame.len() != st.pending.as_ref().unwrap_or(&st.shown).len();
        // A bar going away: its last count, held back, first. (A bar appearing supersedes it.)
        if let Some(held) = st.pending.take_if(|held| held.len() > frame.len()) {
            st.log(held, &self.sink);
        }
        if due || bars_changed {
            st.pending = None;
            if !frame.is_empty() {
                st.log(frame, &self.sink);
            }
        } else {
            st.pending = Some(frame);
        }
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
    fn rate_limits_to_the_interval_but_never_loses_a_finished_bar() {
        let (t, got) = recorder(Duration::from_secs(3600));
        draw(&t, &["p 1/2", "x 1/9"]);
        draw(&t, &["p 1/2", "x 2/9"]);
        draw(&t, &["p 1/2", "x 3/9"]);
        assert_eq!(*got.lock().unwrap(), vec!["p 1/2", "x 1/9"], "held back within the interval");
        // The stage's bar goes away: its last count first, then what is left.
        draw(&t, &["p 2/2"]);
        assert_eq!(*got.lock().unwrap(), vec!["p 1/2", "x 1/9", "p 1/2", "x 3/9", "p 2/2"]);
        // A new bar appears: logged at once, and the older redraw held back before it is not.
        draw(&t, &["p 3/3"]);
        draw(&t, &["p 3/3", "y 0/5"]);
        assert_eq!(got.lock().unwrap()[5..], ["p 3/3", "y 0/5"]);
        assert_eq!(got.lock().unwrap().len(), 7);
    }

    #[test]
    fn escape_codes_are_dropped() {
        let (t, got) = recorder(Duration::ZERO);
        draw(&t, &["\u{1b}[1mpipeline\u{1b}[0m 1/2"]);
        assert_eq!(*got.lock().unwrap(), vec!["pipeline 1/2"]);
    }

    /// Through indicatif itself, as `xtask` draws: a bar's last drawn count reaches the log when the
    /// bar goes away, however soon after the last logged line.
    #[test]
    fn indicatif_bars_reach_the_log() {
        use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
        let (t, got) = recorder(Duration::from_secs(3600));
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(t)));
        let top = multi.add(ProgressBar::new(2).with_message("steps"));
        top.set_style(indicatif::ProgressStyle::with_template("{msg} {pos}/{len}").unwrap());
        top.tick();
        let bar = multi.add(ProgressBar::new(50));
        bar.set_style(indicatif::ProgressStyle::with_template("{msg} [{bar:10}] {pos}/{len}").unwrap());
        for _ in 0..50 {
            bar.inc(1);
        }
        // indicatif skips redraws of a fast bar; `finish` draws its final count (held back here, as
        // it comes within the interval), and clearing the bar must not lose that count.
        bar.finish();
        bar.finish_and_clear();
        top.inc(1);
        top.finish_and_clear();
        let got = got.lock().unwrap().clone();
        assert_eq!(got.first().map(String::as_str), Some("steps 0/2"), "{got:?}");
        assert!(got.iter().any(|l| l.ends_with("] 50/50")), "the finished bar's last count: {got:?}");
        assert!(got.iter().any(|l| l == "steps 1/2"), "{got:?}");
    }
}

//! The live screen: the alternate screen in raw mode, one frame a second,
//! `q`, `Esc` or Ctrl-C to quit.
//!
//! The terminal is restored by a guard's `Drop`, so a return by `?` or a
//! panic in between still gives the user their shell back. Raw mode turns
//! Ctrl-C into a key event (no SIGINT), which is read like `q`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};

use super::fetch;
use super::frame;

/// How often `/status` is polled and the frame redrawn.
pub(super) const REFRESH: Duration = Duration::from_secs(1);

/// Runs until the user quits, polling `admin` once a second.
pub(super) fn run(name: &str, admin: SocketAddr) -> io::Result<()> {
    let _terminal = RawScreen::enter()?;
    let mut seen = frame::Seen::default();
    loop {
        seen.polled(fetch::status(admin), SystemTime::now());
        let mut lines = frame::render(name, admin, &seen);
        lines.push(String::new());
        lines.push("q quits".to_owned());
        draw(&lines)?;
        if quit_requested_within(REFRESH)? {
            return Ok(());
        }
    }
}

fn draw(lines: &[String]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    queue!(
        out,
        cursor::MoveTo(0, 0),
        terminal::Clear(terminal::ClearType::All)
    )?;
    for line in lines {
        // Raw mode: a newline does not return the carriage.
        write!(out, "{line}\r\n")?;
    }
    out.flush()
}

/// Waits up to `span` for a key; true when it asks to quit.
fn quit_requested_within(span: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + span;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(false);
        }
        if let Event::Key(key) = event::read()? {
            let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers == KeyModifiers::CONTROL;
            let quit = matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) || ctrl_c;
            if key.kind == KeyEventKind::Press && quit {
                return Ok(true);
            }
        }
    }
}

/// Raw mode and the alternate screen while it lives.
#[derive(Debug)]
struct RawScreen;

impl RawScreen {
    fn enter() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        // From here on, Drop restores whatever was switched.
        let screen = RawScreen;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }
}

impl Drop for RawScreen {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

//! Signals belong to the coordinator: a small thread turns them into events.
//! SIGTERM and SIGINT shut down gracefully (a second one forces the exit),
//! SIGHUP starts a rolling reload, SIGUSR2 a binary upgrade.

use std::io;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::{Handle, Signals};

use super::Event;

/// The signal thread; [`Listener::stop`] ends it and joins it.
pub(crate) struct Listener {
    handle: Handle,
    thread: JoinHandle<()>,
}

impl Listener {
    pub(crate) fn start(events: flume::Sender<Event>) -> io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("forkless-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let event = match signal {
                        SIGHUP => Event::Reload(None),
                        SIGUSR2 => Event::Upgrade(None),
                        other => Event::Signal(other),
                    };
                    if events.send(event).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self { handle, thread })
    }

    pub(crate) fn stop(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

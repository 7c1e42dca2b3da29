//! Signals belong to the coordinator: a small thread turns them into events.

use std::io;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use super::Event;

/// The signal thread; [`Listener::stop`] ends it and joins it.
pub(crate) struct Listener {
    handle: Handle,
    thread: JoinHandle<()>,
}

impl Listener {
    pub(crate) fn start(events: flume::Sender<Event>) -> io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("forkless-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if events.send(Event::Signal(signal)).is_err() {
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
